"""Benchmark every registered net: parameter count and median train-step time.

One train step is forward + backward + Adam on a random batch (default 2) of cubes
``(B, C, S, S, S)``. On CPU with ``torch.set_num_threads`` (default 2) in fp32; on CUDA,
when available, with autocast (bf16 where supported, else fp16 with a grad scaler).
Prints ONE JSON line::

    python benchmarks/nets.py                  # 64^3
    python benchmarks/nets.py --sizes 64 96    # swin_unetr skipped above 64^3 on CPU unless
                                               # --transformer-max-size 96
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# This script shares its name with the package it measures: when run as a file, put the
# repository root instead of this folder on sys.path so that ``import nets`` finds the package.
_HERE, _ROOT = Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]
sys.path[:] = [str(_ROOT) if Path(p or ".").resolve() == _HERE else p for p in sys.path]

import monai  # noqa: E402
import torch  # noqa: E402

from nets import count_parameters, create_net, list_nets, net_kind  # noqa: E402

TRANSFORMERS = ("swin_unetr",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=None, help="net names (default: all registered)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64], help="cube edges in voxels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed CPU steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--cuda-steps", type=int, default=20, help="timed CUDA steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--transformer-max-size", type=int, default=64, help="largest CPU size for transformers")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA measurements")
    return parser.parse_args(argv)


def _loss(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """A scalar touching every output (timing only, the value is meaningless)."""
    outputs = out.values() if isinstance(out, dict) else [out]
    return sum(value.float().square().mean() for value in outputs)


def _make_step(net: torch.nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None) -> Callable[[], None]:
    """Return a closure running one forward + backward + Adam step."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = _loss(net(x))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def time_train_step(name: str, size: int, args: argparse.Namespace, device: torch.device,
                    amp_dtype: torch.dtype | None, steps: int) -> float:
    """Median seconds of ``steps`` train steps after ``args.warmup`` warm-up steps."""
    torch.manual_seed(0)
    net = create_net(name).to(device).train()
    x = torch.randn(args.batch, net.in_channels, size, size, size, device=device)
    step = _make_step(net, x, amp_dtype)
    times = []
    for _ in range(args.warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times[args.warmup:]), 4)


def _cuda_amp_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def bench_net(name: str, args: argparse.Namespace, use_cuda: bool) -> dict:
    """Parameters and step times of one net at every requested size."""
    result: dict = {"kind": net_kind(name), "params": count_parameters(create_net(name)), "cpu_step_s": {}}
    for size in args.sizes:
        too_big = name in TRANSFORMERS and size > args.transformer_max_size
        cpu = None if too_big else time_train_step(name, size, args, torch.device("cpu"), None, args.steps)
        result["cpu_step_s"][str(size)] = cpu
    if use_cuda:
        cuda = torch.device("cuda")
        result["cuda_amp_step_s"] = {
            str(size): time_train_step(name, size, args, cuda, _cuda_amp_dtype(), args.cuda_steps)
            for size in args.sizes
        }
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one JSON line."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    if use_cuda:
        torch.backends.cudnn.benchmark = True
    names = args.nets or list_nets()
    report = {
        "benchmark": "nets",
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cpu_threads": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "sizes": args.sizes,
        "cuda": torch.cuda.get_device_name() if use_cuda else None,
        "cuda_amp_dtype": str(_cuda_amp_dtype()).removeprefix("torch.") if use_cuda else None,
        "nets": {name: bench_net(name, args, use_cuda) for name in names},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
