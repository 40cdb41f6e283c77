"""The CPU-scale study: 3D models against the 2D slice-wise baseline, on the same data and budget.

Stages (each resumable: a finished stage is skipped when the script is run again):

1. **data**: the ``cpu`` preset dataset (``--cases`` blocks, seed ``--seed``; the test split is
   held out by the dataset's seeded split), built with two ``--shard`` processes side by side.
2. **train**: every model of :data:`MODELS` from its shipped config with the same wall-clock
   budget (``train.max_minutes``), one after the other: the 3D cWGAN-GP upsampler and its 2D
   slice-wise twin, the 3D and 2D segmenters from raw input, the 3D segmenter on the old three
   PoCA channels only (the channel ablation), the 3D segmenter from raw +
   upsampled input (the frozen 3D upsampler), and the joint 3D model.
3. **evaluate**: ``evaluate.py`` on the test split for each model.
4. **report**: ``docs/results.md`` (or ``--results``) generated from the evaluation summaries,
   with the commit and the command; nothing in it is typed by hand.

``--quick`` runs the same chain on the ``tiny`` preset with 1-minute budgets (smoke run,
~10 minutes on 2 cores). Usage::

    python benchmarks/study_cpu.py --out study/cpu                       # the study (~3 h on 2 cores)
    python benchmarks/study_cpu.py --out study/quick --quick             # smoke run
    python benchmarks/study_cpu.py --out study/cpu --budget-min 8        # shorter budgets

The last line printed is a JSON summary (stage times, steps per model, results path).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from volumetric.data.build import PRESETS  # noqa: E402

# name, config stem (configs/<stem>_<scale>.yaml), extra overrides ({runs} is the runs folder)
MODELS = (
    ("up3d", "upsample", ()),
    ("up2d", "upsample2d", ()),
    ("seg3d", "segment", ()),
    ("seg3d_poca3", "segment", ("data.input_channels=[count,sum_theta2_rad2,sum_theta4_rad4]",)),  # channel ablation
    ("seg2d", "segment2d", ()),
    ("seg3d_up", "segment", ("model.segment_input=both", "model.upsampler={runs}/up3d/checkpoints/best.pt")),
    ("joint3d", "joint", ()),
)


# evaluated inputs at the cpu preset: these full-scale-equivalent days (checkpoints of the calibrated preset)
CPU_EQUIVALENT_DAYS = (0.25, 1.0, 5.0, 21.0, 100.0)  # 100: the target exposure, segmented as an input too
CPU_EXPOSURES_DAYS = tuple(PRESETS["cpu"].checkpoints_days[PRESETS["cpu"].equivalent_days.index(d)]
                           for d in CPU_EQUIVALENT_DAYS)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("study/cpu"), help="study folder (runs, evaluations, logs)")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default <out>/data)")
    p.add_argument("--cases", type=int, default=None, help="dataset blocks (default 32; quick: 8)")
    p.add_argument("--seed", type=int, default=0, help="dataset and training seed")
    p.add_argument("--budget-min", type=float, default=None, help="training minutes per model (default 25; quick: 1)")
    p.add_argument("--models", nargs="+", default=None, help="train/evaluate only these (names of MODELS)")
    p.add_argument("--results", type=Path, default=None, help="markdown report (default docs/results.md; quick: <out>/results.md)")
    p.add_argument("--quick", action="store_true", help="tiny preset, 1-minute budgets: a smoke run")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads per training/evaluation process (1 leaves a core free, e.g. under taskset)")
    p.add_argument("--stop-after", choices=("data", "train", "evaluate"), default=None, help="stop after this stage")
    args = p.parse_args(argv)
    args.scale = "tiny" if args.quick else "cpu"
    args.cases = args.cases or (8 if args.quick else 32)
    args.budget_min = args.budget_min or (1.0 if args.quick else 25.0)
    args.data = args.data or args.out / "data"
    args.results = args.results or (args.out / "results.md" if args.quick else ROOT / "docs" / "results.md")
    return args


def _run(cmd: list[str], log: Path, threads: int) -> str:
    """Run ``cmd`` from the repository root with ``threads`` CPU threads, stderr to ``log``; return stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as err:
        err.write(f"$ {' '.join(cmd)}\n")
        err.flush()
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"study: {' '.join(cmd[:3])}... failed (exit {done.returncode}); see {log}")
    return done.stdout


def build_data(args) -> None:
    """Two shards side by side (same bytes as one process); finished cases are skipped."""
    cmd = [sys.executable, "-m", "volumetric.cli", "simulate", "--preset", args.scale, "--cases", str(args.cases),
           "--seed", str(args.seed), "--out", str(args.data), "--no-progress", "--threads", "1"]
    logs = [open(args.out / "logs" / f"data_{i}.log", "a") for i in (1, 2)]
    try:
        procs = [subprocess.Popen([*cmd, "--shard", f"{i}/2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
                 for i, log in zip((1, 2), logs)]
        failed = [p.wait() for p in procs]
    finally:
        for log in logs:
            log.close()
    if any(failed):
        raise SystemExit(f"study: building {args.data} failed; see {args.out / 'logs'}")


def train_model(args, name: str, stem: str, extra) -> dict:
    """Train one model with the shared budget; its summary is kept in ``train/<name>.json``."""
    record = args.out / "train" / f"{name}.json"
    if record.is_file():
        return json.loads(record.read_text())
    runs = (args.out / "runs").resolve()
    if (runs / name).exists():  # killed mid-run: its budget would not be comparable, start over
        shutil.rmtree(runs / name)
    overrides = [f"data.path={args.data.resolve()}", f"train.out_dir={runs}", f"train.run_name={name}",
                 f"train.max_minutes={args.budget_min}", "train.steps=1000000", "train.progress=false",
                 f"train.seed={args.seed}", f"train.threads={args.threads}", *(o.format(runs=runs) for o in extra)]
    if args.quick:
        overrides += ["validation.every=100000"]
    out = _run([sys.executable, "train.py", "-c", f"configs/{stem}_{args.scale}.yaml", *overrides],
               args.out / "logs" / f"train_{name}.log", args.threads)
    summary = json.loads(out.strip().splitlines()[-1])
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_model(args, name: str) -> Path:
    """``evaluate.py`` on the test split; returns the evaluation folder."""
    folder = args.out / "eval" / name
    if (folder / "summary.json").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    run = args.out / "runs" / name
    exposures = [] if args.quick else ["--exposures", *map(str, CPU_EXPOSURES_DAYS)]
    _run([sys.executable, "evaluate.py", "--run", str(run), "--data", str(args.data), "--split", "test",
          "--out", str(folder), "--no-progress", *exposures], args.out / "logs" / f"eval_{name}.log", args.threads)
    return folder


def main(argv=None) -> None:
    args = parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    models = [m for m in MODELS if args.models is None or m[0] in args.models]
    times = {}
    t0 = time.perf_counter()
    build_data(args)
    times["data_s"] = time.perf_counter() - t0
    if args.stop_after == "data":
        return
    trained = {}
    for name, stem, extra in models:
        t0 = time.perf_counter()
        trained[name] = train_model(args, name, stem, extra)
        times[f"train_{name}_s"] = time.perf_counter() - t0
    if args.stop_after == "train":
        print(json.dumps({"trained": {k: v["steps"] for k, v in trained.items()}}))
        return
    evaluations = {}
    for name, _, _ in models:
        t0 = time.perf_counter()
        evaluations[name] = evaluate_model(args, name)
        times[f"eval_{name}_s"] = time.perf_counter() - t0
    if args.stop_after == "evaluate":
        return
    from study_report import write_report

    command = " ".join(["python", "benchmarks/study_cpu.py", *(argv if argv is not None else sys.argv[1:])])
    write_report(args, trained, evaluations, command)
    print(json.dumps({"study": str(args.out), "scale": args.scale, "budget_min": args.budget_min,
                      "steps": {k: v["steps"] for k, v in trained.items()},
                      "median_step_s": {k: v["median_step_s"] for k, v in trained.items()},
                      "results": str(args.results), **{k: round(v, 1) for k, v in times.items()}}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
