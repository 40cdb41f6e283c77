"""Command line: ``volumetric simulate`` and ``volumetric demo``.

The entry point parses arguments and calls library functions; errors the user can fix (bad
geometry, existing outputs, missing files) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "DEMO_DAYS", "DEMO_VOXEL_MM"]

DEMO_DAYS = (0.25, 1.0)
DEMO_VOXEL_MM = 10.0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output case folder (refused if non-empty)")
    p.add_argument("--seed", type=int, default=0, help="master seed (same seed, same bytes)")
    p.add_argument("--method", choices=("straight", "stepwise"), default="straight",
                   help="transport: closed form along the entry line (fast) or step by step (reference)")
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--rate-hz-per-m2", type=_positive_float, default=166.7,
                   help="sky-plane muon rate, Hz/m^2 (166.7 = 14.4e6 muons/day/m^2, the reference)")
    p.add_argument("--detector", type=Path, default=None,
                   help="detector JSON ({'above': [stations], 'below': [stations]}, as in simulation.json); "
                        "default: two stations 50 and 450 mm above and below the block, 0.58 mm, 98%%")
    p.add_argument("--save-tracks", type=Path, default=None, help="write per-muon records to this HDF5 file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="volumetric", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="simulate a block given as geometry JSON")
    sim.add_argument("--geometry", required=True, type=Path, help="block description (volumetric-geometry/1 JSON)")
    sim.add_argument("--days", required=True, type=_positive_float, nargs="+",
                     help="exposure checkpoints in days (fractions allowed), e.g. 0.25 1 3")
    sim.add_argument("--voxel-mm", required=True, type=_positive_float, help="voxel edge in mm")
    _add_run_options(sim)
    demo = sub.add_parser("demo", help="simulate the reference block at a small scale and write a preview")
    _add_run_options(demo)
    demo.set_defaults(days=list(DEMO_DAYS), voxel_mm=DEMO_VOXEL_MM, geometry=None)
    return parser


def _device(name: str):
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _reference_geometry_path() -> Path:
    """``examples/reference_block.json`` of the source tree (the README installs it editable)."""
    return Path(__file__).resolve().parent.parent / "examples" / "reference_block.json"


def _load_detector(path: Path):
    from volumetric.detector import Detector

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such detector file")
    try:
        return Detector.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a detector description ({type(err).__name__}: {err})") from None


def _run_simulation(args) -> int:
    import torch

    from volumetric.case import simulate_case
    from volumetric.geometry import load_geometry

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    geometry = args.geometry or _reference_geometry_path()
    block = load_geometry(geometry)
    days = sorted(set(args.days))
    detector = _load_detector(args.detector) if args.detector else None
    summary = simulate_case(
        block, args.out, args.voxel_mm, days, seed=args.seed, detector=detector, rate_hz_per_m2=args.rate_hz_per_m2,
        method=args.method, save_tracks=args.save_tracks, device=_device(args.device),
        progress=not args.no_progress, overwrite=args.overwrite,
    )
    counts = summary["counts"]
    print(json.dumps({"out": str(args.out), "days": days, "voxel_mm": args.voxel_mm, "seconds": summary["seconds"],
                      "generated": counts["generated"], "accepted": counts["accepted"],
                      "preview": str(Path(args.out) / "preview.png")}))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run_simulation(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        print(f"volumetric {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
