"""Geometry JSON files (``volumetric-geometry/1``): writing and reading a :class:`Block`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from volumetric.physics.geometry.objects import Block


def save_geometry(block: Block, path: str | Path) -> None:
    """Write ``block`` as indented JSON (format ``volumetric-geometry/1``) to ``path``."""
    text = json.dumps(block.to_dict(), indent=2, allow_nan=False)
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    Path(path).write_text(text + "\n", encoding="utf-8")


# A JSON list holding only numbers, which ``save_geometry`` writes on one line.
_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9.eE+-]+,\s*)*-?[0-9.eE+-]+)\s*\]")


def load_geometry(path: str | Path) -> Block:
    """Read and validate a geometry JSON file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for malformed JSON or an invalid geometry; the message starts with the path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"geometry file not found: {path}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    try:
        return Block.from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


