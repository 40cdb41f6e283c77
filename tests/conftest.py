"""Fixtures shared by test modules."""

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """3 tiny cases (1 train, 1 val, 1 test), built once per test session."""
    from volumetric.data.build import build_dataset

    root = tmp_path_factory.getbasetemp() / "tiny_dataset"
    build_dataset(root, "tiny", cases=3, seed=0, progress=False)
    return root
