"""The layers of ``volumetric/``: inference never imports training; reading a dataset never imports the simulator."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("physics", "data", "train", "infer", "evaluation")


def test_the_folder_tree_shows_the_layers():
    for name in PACKAGES:
        assert (ROOT / "volumetric" / name / "__init__.py").is_file()
    flat = sorted(p.stem for p in (ROOT / "volumetric").glob("*.py"))
    assert flat == ["__init__", "cli", "figures", "pretrained", "quickstart", "schema"]


def _loaded_after(module: str) -> list[str]:
    code = (f"import sys, json; import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('volumetric'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_rules_hold_transitively():
    inference = _loaded_after("volumetric.infer.predictor")
    assert not [m for m in inference if m.startswith("volumetric.train")], inference
    reading = _loaded_after("volumetric.data.dataset")
    forbidden = ("volumetric.physics.simulate", "volumetric.physics.transport", "volumetric.data.case",
                 "volumetric.data.build")
    assert not [m for m in reading if m.startswith(forbidden)], reading
