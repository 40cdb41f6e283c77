"""Command line: ``volumetric simulate``, ``demo``, ``reconstruct``, ``train`` and ``infer``.

The entry point parses arguments and calls library functions; errors the user can fix (bad
geometry, existing outputs, missing files) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "device_arg", "positive_int"]

_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def device_arg(text: str) -> str:
    """argparse type of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (syntax only).

    Whether CUDA is present is checked when the command runs
    (:func:`volumetric.infer.predictor.resolve_device`).
    """
    if not _DEVICE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _number(text: str, convert, accept, expected: str, unparsable: str | None = None):
    """``convert(text)`` if ``accept`` holds for it, else an argparse error naming ``expected``."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {unparsable or expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count that must be >= 1 (e.g. ``--threads``)."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < float("inf"), "a positive finite number", "a number")


def _non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < float("inf"), "a non-negative finite number", "a number")


def overlap_arg(text: str) -> float:
    """argparse type of ``--overlap``: a window overlap fraction in ``[0, 1)``."""
    return _number(text, float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 1/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected i/n with 1 <= i <= n, got {text!r}")
    return i, n


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output case folder (refused if non-empty)")
    p.add_argument("--seed", type=int, default=0, help="master seed (same seed, same bytes)")
    p.add_argument("--method", choices=("straight", "stepwise"), default="straight",
                   help="transport: closed form along the entry line (fast) or step by step (reference)")
    p.add_argument("--device", type=device_arg, default="auto",
                   help="torch device: auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1),
                   help="CPU threads of torch and the Numba kernels (default 2, or 1 on a 1-core machine: on 2 "
                        "cores 1.1-1.6x faster than 1, the kernels being memory-bound; see benchmarks/simulate.py)")
    p.add_argument("--kernel", choices=("auto", "torch", "numba"), default="auto",
                   help="transport and path statistics: auto (fused Numba kernels on the CPU), torch (the "
                        "reference, any device) or numba")
    p.add_argument("--rate-hz-per-m2", type=_positive_float, default=166.7,
                   help="sky-plane muon rate, Hz/m^2 (166.7 = 14.4e6 muons/day/m^2, the reference)")
    p.add_argument("--detector", type=Path, default=None,
                   help="detector JSON ({'above': [stations], 'below': [stations]}, as in simulation.json); "
                        "default: two stations 50 and 450 mm above and below the block, 0.58 mm, 98%%")
    p.add_argument("--save-tracks", type=Path, default=None, help="write per-muon records to this HDF5 file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _default_threshold_mrad() -> float:
    from volumetric.schema import DEFAULT_THETA_THRESHOLD_RAD

    return DEFAULT_THETA_THRESHOLD_RAD * 1e3


def _add_threshold_option(parser, prefix: str) -> None:
    parser.add_argument("--theta-threshold-mrad", type=_positive_float, default=_default_threshold_mrad(),
                        help=f"{prefix}angle above which a muon counts in the *_above_threshold channels, mrad "
                             f"(default %(default)g; recorded in simulation.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="volumetric", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="simulate a block given as geometry JSON, or a random dataset (--preset)")
    source = sim.add_mutually_exclusive_group()
    source.add_argument("--geometry", type=Path, help="block description (volumetric-geometry/1 JSON)")
    source.add_argument("--preset", choices=("tiny", "cpu", "full"),
                        help="build a random dataset at this scale into --out (resumable; see docs/dataset_format.md)")
    sim.add_argument("--days", type=_positive_float, nargs="+",
                     help="with --geometry: exposure checkpoints in days (fractions allowed), e.g. 0.25 1 3")
    sim.add_argument("--voxel-mm", type=_positive_float, help="with --geometry: voxel edge in mm")
    _add_threshold_option(sim, "with --geometry: ")
    sim.add_argument("--cases", type=int, default=None, help="with --preset: number of cases of the dataset")
    sim.add_argument("--shard", type=_shard, default=(1, 1),
                     help="with --preset: i/n, write only cases j with j %% n == i-1 (e.g. 1/2 and 2/2)")
    sim.add_argument("--name", default=None, help="with --preset: dataset name (default <preset>-seed<seed>)")
    _add_run_options(sim)
    rec = sub.add_parser("reconstruct", help="turn a track file (.h5, .csv, .root) into a case folder")
    rec.add_argument("--tracks", required=True, type=Path, help="tracks: our HDF5, CSV of per-plane hits, or ROOT")
    rec.add_argument("--geometry", type=Path, default=None, help="block description: adds labels (optional)")
    rec.add_argument("--block-size-mm", type=_positive_float, nargs=3, default=None,
                     help="block x y thickness in mm when there is no geometry (HDF5 files carry it)")
    rec.add_argument("--voxel-mm", required=True, type=_positive_float, help="voxel edge in mm")
    rec.add_argument("--days", required=True, type=_positive_float, nargs="+",
                     help="exposure checkpoints in days (one value, the acquisition time, if the tracks have no t_s)")
    rec.add_argument("--out", required=True, type=Path, help="output case folder (refused if non-empty)")
    _add_threshold_option(rec, "")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    demo = sub.add_parser("demo", help="quickstart: simulate the reference block, run the shipped models, "
                                       "write the upsampled volume, label map, montage and object list")
    demo.add_argument("--geometry", type=Path, default=None,
                      help="block to simulate (default: examples/reference_block.json, the talk's block)")
    demo.add_argument("--min-object-diameter-mm", type=_non_negative_float, default=None,
                      help="objects.json leaves out found objects whose equivalent diameter (sphere of the same "
                           "volume) is smaller, mm (default 10; recorded in quickstart.json)")
    _add_run_options(demo)
    _add_train_parser(sub)
    _add_infer_parser(sub)
    return parser


def _add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="train an upsampler, segmenter or joint model from a YAML config")
    train.add_argument("-c", "--config", type=Path, default=None, help="YAML config (configs/*.yaml)")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted overrides parsed as YAML, e.g. optim.lr=1e-3 train.steps=20")
    train.add_argument("--resume", type=Path, default=None,
                       help="continue the run in this folder from checkpoints/last.pt (overrides apply, "
                            "e.g. train.steps=N to extend)")


def _check_train_config(args) -> None:
    """Refuse a bad ``train.device`` or ``train.threads`` before a run folder is made.

    Reads the config as :func:`volumetric.train.engine.run_training` will (the run's ``config.yaml``
    when resuming), so a typo costs no stray run folder (whose name a corrected rerun could not reuse).

    Raises:
        ValueError: for a device other than auto, cpu, cuda, cuda:N (or CUDA requested but absent),
            or threads < 1.
    """
    from volumetric.train.config import load_config
    from volumetric.infer.predictor import resolve_device

    if args.config is None and args.resume is None:
        return  # run_training says what is missing
    path = args.config if args.resume is None else Path(args.resume) / "config.yaml"
    train = load_config(path, args.overrides).train
    if not isinstance(train.device, str) or not _DEVICE_NAME.fullmatch(train.device):
        raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {train.device!r}")
    try:
        resolve_device(train.device)
    except ValueError:
        raise ValueError(f"train.device={train.device!r} but CUDA is not available; use train.device=cpu") from None
    if train.threads is not None and train.threads < 1:
        raise ValueError(f"train.threads must be a positive integer or null, got {train.threads}")


def _run_train(args) -> int:
    from volumetric.train.engine import run_training

    _check_train_config(args)
    summary = run_training(args.config, args.overrides, args.resume)
    if summary.get("rank", 0) == 0:
        print(json.dumps(summary))
    return 0


def _add_infer_parser(sub) -> None:
    infer = sub.add_parser("infer", help="predict a whole block (NIfTI file or case folder) with a trained run")
    infer.add_argument("input", type=Path, help="raw statistics NIfTI (X, Y, Z, C) or a dataset case folder")
    infer.add_argument("--out", required=True, type=Path, help="output folder (files <stem>_upsampled/_label...)")
    model = infer.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", type=Path, help="run folder (its checkpoints/best.pt, else last.pt)")
    model.add_argument("--checkpoint", type=Path, help="a checkpoint file (.pt)")
    infer.add_argument("--segmenter", type=Path, default=None,
                       help="segment run folder or checkpoint applied after an upsample --run")
    infer.add_argument("--exposure-days", type=_positive_float, default=None,
                       help="exposure of the input in days (for a case folder: which exposure, default the "
                            "shortest; conditioned models that record their training occupancy are given the "
                            "training days with the input's PoCA points per voxel instead)")
    infer.add_argument("--roi", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                       help="window in voxels (default: the run's validation window or patch size)")
    infer.add_argument("--overlap", type=overlap_arg, default=0.25, help="window overlap fraction in [0, 1)")
    infer.add_argument("--sw-batch-size", type=positive_int, default=4, help="windows per forward pass")
    infer.add_argument("--device", type=device_arg, default="auto",
                       help="where windows run: auto (CUDA if present), cpu, cuda, cuda:1 ...")
    infer.add_argument("--tta", action="store_true",
                       help="average over the 8 XY flips/rotations and write uncertainty maps (8x slower)")
    infer.add_argument("--probabilities", action="store_true", help="also write class probabilities (X, Y, Z, K)")
    infer.add_argument("--overwrite", action="store_true", help="replace existing output files")
    infer.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_infer(args) -> int:
    from volumetric.infer.predictor import WindowSettings, load_model, resolve_device
    from volumetric.infer.files import infer_file

    device = resolve_device(args.device)
    model = load_model(args.run or args.checkpoint, device)
    segmenter = load_model(args.segmenter, device) if args.segmenter is not None else None
    settings = WindowSettings(roi_size=tuple(args.roi) if args.roi else None, overlap=args.overlap,
                              sw_batch_size=args.sw_batch_size, amp=device.type == "cuda", tta=args.tta,
                              progress=not args.no_progress)
    files = infer_file(args.input, args.out, model, segmenter, args.exposure_days, settings,
                       save_probabilities=args.probabilities, overwrite=args.overwrite)
    print(json.dumps({k: str(v) for k, v in files.items()}))
    return 0


def _device(name: str) -> str:
    """Resolve a checked ``--device`` name: ``auto`` -> ``cuda`` if present, else ``cpu``.

    A CUDA device goes through :func:`volumetric.infer.predictor.resolve_device` (``cuda`` without CUDA
    is a ``ValueError``); it is imported only then because it pulls in MONAI, seconds of
    start-up that a CPU simulation does not need.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    from volumetric.infer.predictor import resolve_device

    return str(resolve_device(name))


def _reference_geometry_path() -> Path:
    """``examples/reference_block.json`` of the source tree (the README installs it editable)."""
    return Path(__file__).resolve().parent.parent / "examples" / "reference_block.json"


def _load_detector(path: Path):
    from volumetric.physics.detector import Detector

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such detector file")
    try:
        return Detector.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a detector description ({type(err).__name__}: {err})") from None


def _run_simulation(args) -> int:
    import torch

    from volumetric.data.case import simulate_case
    from volumetric.physics.geometry import load_geometry

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    geometry = args.geometry or _reference_geometry_path()
    block = load_geometry(geometry)
    days = sorted(set(args.days))
    detector = _load_detector(args.detector) if args.detector else None
    summary = simulate_case(
        block, args.out, args.voxel_mm, days, seed=args.seed, detector=detector, rate_hz_per_m2=args.rate_hz_per_m2,
        method=args.method, save_tracks=args.save_tracks, device=_device(args.device),
        progress=not args.no_progress, overwrite=args.overwrite, theta_threshold_rad=args.theta_threshold_mrad * 1e-3,
        kernel=args.kernel,
    )
    counts = summary["counts"]
    print(json.dumps({"out": str(args.out), "days": days, "voxel_mm": args.voxel_mm, "seconds": summary["seconds"],
                      "generated": counts["generated"], "accepted": counts["accepted"],
                      "preview": str(Path(args.out) / "preview.png")}))
    return 0


def _run_demo(args) -> int:
    import torch

    from volumetric.physics.geometry import load_geometry
    from volumetric.quickstart import run_quickstart

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    block = load_geometry(args.geometry or _reference_geometry_path())
    detector = _load_detector(args.detector) if args.detector else None
    size = {} if args.min_object_diameter_mm is None else {"min_object_diameter_mm": args.min_object_diameter_mm}
    summary = run_quickstart(args.out, block, seed=args.seed, device=_device(args.device), overwrite=args.overwrite,
                             progress=not args.no_progress, method=args.method, detector=detector,
                             rate_hz_per_m2=args.rate_hz_per_m2, save_tracks=args.save_tracks, kernel=args.kernel,
                             **size)
    print(json.dumps({k: summary[k] for k in ("out", "input_days", "voxel_mm", "dice", "objects_found",
                                              "false_positives", "warnings", "simulate_s", "predict_s", "files")}))
    return 0


def _check_simulate_args(parser: argparse.ArgumentParser, args) -> None:
    if args.command != "simulate":
        return
    if args.preset is None and args.geometry is None:
        parser.error("simulate: give --geometry G.json (one block) or --preset tiny|cpu|full (a random dataset)")
    if args.geometry is not None:
        missing = [flag for flag, value in (("--days", args.days), ("--voxel-mm", args.voxel_mm)) if value is None]
        extra = [flag for flag, bad in (("--cases", args.cases is not None), ("--shard", args.shard != (1, 1)))
                 if bad]
        if missing:
            parser.error(f"simulate --geometry needs {' and '.join(missing)}")
        if extra:
            parser.error(f"simulate --geometry does not take {', '.join(extra)} (those are for --preset)")
    else:
        extra = [flag for flag, bad in (("--days", args.days is not None), ("--voxel-mm", args.voxel_mm is not None),
                                        ("--save-tracks", args.save_tracks is not None),
                                        ("--overwrite", args.overwrite),
                                        ("--theta-threshold-mrad", args.theta_threshold_mrad != _default_threshold_mrad()))
                 if bad]
        if args.cases is None or args.cases < 1:
            parser.error("simulate --preset needs --cases N (N >= 1)")
        if extra:
            parser.error(f"simulate --preset does not take {', '.join(extra)} (the preset fixes the scale)")


def _run_dataset(args) -> int:
    import torch

    from volumetric.data.build import build_dataset

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = build_dataset(args.out, args.preset, args.cases, seed=args.seed, shard=args.shard, name=args.name,
                           device=_device(args.device), progress=not args.no_progress)
    print(json.dumps({"out": str(args.out), "preset": args.preset, "shard": f"{args.shard[0]}/{args.shard[1]}",
                      "built": len(result["built"]), "skipped": len(result["skipped"])}))
    return 0


def _run_reconstruct(args) -> int:
    from volumetric.physics.geometry import load_geometry
    from volumetric.data.importers import reconstruct_case

    block = load_geometry(args.geometry) if args.geometry is not None else None
    summary = reconstruct_case(args.tracks, args.out, args.voxel_mm, sorted(set(args.days)), geometry=block,
                               block_size_mm=args.block_size_mm, overwrite=args.overwrite,
                               theta_threshold_rad=args.theta_threshold_mrad * 1e-3)
    print(json.dumps({"out": str(args.out), "muons_per_exposure": summary["muons_per_exposure"],
                      "labels": summary["has_labels"]}))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_simulate_args(parser, args)
    try:
        if args.command == "train":
            return _run_train(args)
        if args.command == "reconstruct":
            return _run_reconstruct(args)
        if args.command == "infer":
            return _run_infer(args)
        if args.command == "demo":
            return _run_demo(args)
        if getattr(args, "preset", None) is not None:
            return _run_dataset(args)
        return _run_simulation(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError) as err:
        print(f"volumetric {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
