"""Training-loader throughput at the ``cpu`` preset against the train step of a small 3D UNet.

Prints one JSON line: samples/s of ``volumetric.data.dataset.make_dataset`` (train transforms, 64^3
class-balanced patches, batch 2, cached) and the median step time of a MONAI ``UNet``
(16, 32, 64, 128), forward + backward + Adam (L1 image -> target), measured in the same run:
fetch and step alternate, so both see the same machine load; medians over ``--batches``.
The issue's target is ``loader_fraction_of_step <= 0.1``.

Usage::

    python benchmarks/loader.py [--data DIR] [--cases 2] [--batches 20] [--threads 2]

``--data`` is built (or resumed) with ``--cases`` cases of the ``cpu`` preset if it holds no
dataset yet (about 40 s per case on one core).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="cpu-preset dataset folder (built if missing)")
    p.add_argument("--cases", type=int, default=2, help="cases to build when --data holds none")
    p.add_argument("--batches", type=int, default=20, help="timed batches")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--patch", type=int, nargs=3, default=(64, 64, 64))
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    return p.parse_args()


def _batches(loader):
    """Endless batches (a new epoch whenever one ends)."""
    while True:
        yield from loader


def _interleaved(dataset, batch_size, batches, threads):
    """Alternate fetching a batch and training on it, so both see the same machine load.

    Returns:
        Per-batch loader times and per-step train times (s), warm-up dropped.
    """
    from monai.data import DataLoader
    from monai.networks.nets import UNet

    loader = _batches(DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0))
    net = UNet(spatial_dims=3, in_channels=3, out_channels=3, channels=(16, 32, 64, 128), strides=(2, 2, 2))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    load_times, step_times = [], []
    for _ in range(batches + 3):
        start = time.perf_counter()
        batch = next(loader)
        load_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss = torch.nn.functional.l1_loss(net(torch.as_tensor(batch["image"])), torch.as_tensor(batch["target"]))
        loss.backward()
        optimiser.step()
        step_times.append(time.perf_counter() - start)
    return load_times[3:], step_times[3:]


def main():
    args = _parse()
    torch.set_num_threads(args.threads)
    from volumetric.data.build import build_dataset
    from volumetric.data.dataset import make_dataset

    data = args.data or Path(tempfile.mkdtemp(prefix="loader-bench-"))
    start = time.perf_counter()
    build_dataset(data, "cpu", args.cases, seed=0, progress=False)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    dataset = make_dataset(data, "train", patch_size=tuple(args.patch), seed=0, augment=True)
    cache_s = time.perf_counter() - start
    load_times, step_times = _interleaved(dataset, args.batch_size, args.batches, args.threads)
    load_s, step_s = statistics.median(load_times), statistics.median(step_times)
    print(json.dumps({
        "benchmark": "loader", "preset": "cpu", "cases": len(dataset), "patch": list(args.patch),
        "batch_size": args.batch_size, "threads": args.threads, "build_or_check_s": round(build_s, 2),
        "cache_fill_s": round(cache_s, 2), "loader_s_per_batch": round(load_s, 4),
        "loader_samples_per_s": round(args.batch_size / load_s, 1), "unet_step_s": round(step_s, 4),
        "loader_fraction_of_step": round(load_s / step_s, 3), "target_fraction": 0.1,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
