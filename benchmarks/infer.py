"""Benchmark whole-block sliding-window inference against its parts and MONAI's defaults.

For each block size (``X Y Z`` voxels, one random channel) and a small ``resunet``:

* ``whole_s``: :func:`volumetric.infer.sliding_window.predict_volume` (Gaussian blending, our
  ``sw_batch_size``), windows and stitching on the same device on CPU; on CUDA windows on
  the GPU and stitching on the CPU (``whole_s``) or on the GPU (``whole_gpu_stitch_s``);
* ``bare_s``: the net's forward alone on the same number of windows, in the same batches;
* ``monai_default_s``: ``sliding_window_inference`` with MONAI's defaults (constant
  blending, ``sw_batch_size=1``).

``overhead = whole_s / bare_s - 1`` is the stitching cost (target <= 0.30). Median of
``--repeats`` interleaved runs after one warm-up each. Prints ONE JSON line::

    python benchmarks/infer.py                 # 250x250x50
    python benchmarks/infer.py --full          # also 500x500x100 (slow on CPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import monai  # noqa: E402
import torch  # noqa: E402
from monai.data.utils import dense_patch_slices  # noqa: E402
from monai.inferers import sliding_window_inference  # noqa: E402

from nets import count_parameters, create_net  # noqa: E402
from volumetric.infer.sliding_window import predict_volume, resolve_roi  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also run 500x500x100")
    parser.add_argument("--roi", nargs=3, type=int, default=[64, 64, 32], help="window edges X Y Z")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--sw-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA measurements")
    return parser.parse_args(argv)


def _median_times(fns: dict[str, Callable[[], object]], repeats: int, cuda: bool) -> dict[str, float]:
    """Median wall time in seconds of each function after one untimed warm-up call each.

    The functions run in turn within each repeat (interleaved), so a change in machine load
    affects them alike.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _window_count(shape, roi, overlap: float) -> int:
    """Windows MONAI visits: its scan interval (one window where the roi spans the axis)."""
    interval = [r if r == s else max(int(r * (1 - overlap)), 1) for r, s in zip(roi, shape)]
    return len(dense_patch_slices(shape, roi, interval))


def _bare(net, roi, n_windows: int, batch: int, device: torch.device) -> Callable[[], None]:
    """Closure: the net's forward on ``n_windows`` random windows in batches of ``batch``."""
    windows = torch.randn(batch, 1, *roi, device=device)

    def run() -> None:
        with torch.inference_mode():
            for start in range(0, n_windows, batch):
                net(windows[: min(batch, n_windows - start)])

    return run


def _measure(net, shape, args, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    roi = resolve_roi(tuple(args.roi), shape, net.size_multiple)
    n_windows = _window_count(shape, roi, args.overlap)
    x = torch.randn(1, *shape)
    net = net.to(device).eval()
    stitch = "cpu"

    def whole(on=stitch):
        return predict_volume(net, x, roi, args.overlap, args.sw_batch, "gaussian", device=on, sw_device=device)

    def monai_default():
        with torch.inference_mode():
            return sliding_window_inference(x[None].to(device), roi, 1, net)

    row = {"device": device.type, "shape": list(shape), "roi": list(roi), "windows": n_windows}
    fns = {"whole_s": whole, "bare_s": _bare(net, roi, n_windows, args.sw_batch, device),
           "monai_default_s": monai_default}
    if cuda:
        fns["whole_gpu_stitch_s"] = lambda: whole(device)
    row.update(_median_times(fns, args.repeats, cuda))
    row["overhead"] = row["whole_s"] / row["bare_s"] - 1
    row["speedup_vs_monai_default"] = row["monai_default_s"] / row["whole_s"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one JSON line."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = create_net("resunet", channels=(16, 32, 64), num_res_blocks=2)
    shapes = [(250, 250, 50)] + ([(500, 500, 100)] if args.full else [])
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    results = [_measure(net, shape, args, device) for device in devices for shape in shapes]
    print(json.dumps({
        "benchmark": "infer",
        "net": "resunet(channels=(16, 32, 64), num_res_blocks=2)",
        "params": count_parameters(net),
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch,
        "threads": args.threads,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "results": results,
    }))


if __name__ == "__main__":
    main()
