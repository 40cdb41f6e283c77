"""Typed configs: YAML loading, unknown keys, type errors, dotted overrides, resolved config."""

from pathlib import Path

import pytest
import yaml

from volumetric.train.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_valid():
    config = config_from_dict({})
    assert isinstance(config, Config)
    assert config.train.task == "upsample" and config.critic.lambda_gp == 10.0


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.train.task in ("upsample", "segment", "joint")


@pytest.mark.parametrize(
    "data, key",
    [
        ({"optim": {"lr_critic": 1e-4}}, "optim.lr_critic"),
        ({"trian": {"steps": 3}}, "trian"),
        ({"data": {"patch": [8, 8, 8]}}, "data.patch"),
    ],
)
def test_unknown_key_names_its_path(data, key):
    with pytest.raises(ValueError, match=f"unknown config key '{key}'"):
        config_from_dict(data)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"train": {"steps": "many"}}, "train.steps: expected an integer"),
        ({"train": {"amp": "yes"}}, "train.amp: expected true or false"),
        ({"data": {"patch_size": [16, "x", 8]}}, r"data.patch_size\[1\]"),
        ({"train": {"task": "classify"}}, "train.task must be one of"),
        ({"train": {"mode": "wgan"}}, "train.mode must be one of"),
        ({"data": {"target_channels": [3]}}, "data.target_channels"),
        ({"model": {"segment_input": "upsampled"}}, "needs model.upsampler"),
        ({"train": {"steps": 0}}, "train.steps must be >= 1"),
    ],
)
def test_bad_values_are_refused(data, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(data)


def test_parse_override_uses_yaml():
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], "1e-3")  # YAML 1.1: a string...
    assert config_from_dict(apply_overrides({}, ["optim.lr=1e-3"])).optim.lr == 1e-3  # ...read as a float
    assert parse_override("data.patch_size=[16, 16, 8]") == (["data", "patch_size"], [16, 16, 8])
    assert parse_override("model.kwargs.conditioning=null") == (["model", "kwargs", "conditioning"], None)
    with pytest.raises(ValueError, match="expected dotted.key=value"):
        parse_override("optim.lr")


def test_overrides_apply_to_file_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {steps: 5, task: segment}\nmodel: {kwargs: {channels: [8, 16]}}\n")
    config = load_config(path, ["train.steps=7", "model.kwargs.num_res_blocks=1", "train.amp=false"])
    assert config.train.steps == 7 and config.train.task == "segment" and config.train.amp is False
    assert config.model.kwargs == {"channels": [8, 16], "num_res_blocks": 1}


def test_override_unknown_key_and_file_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {steps: 5}\n")
    with pytest.raises(ValueError, match=r"c.yaml: unknown config key 'train.stepz'"):
        load_config(path, ["train.stepz=3"])
    with pytest.raises(ValueError, match="train is not a section"):
        apply_overrides({"train": 3}, ["train.steps=3"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml: malformed YAML"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    config = load_config(CONFIGS / "upsample_tiny.yaml", ["optim.lr=5e-4"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config_to_dict(config)
