"""Registry: names, kinds, errors, and rebuilding a net from its stored spec."""

import io

import pytest
import torch
from torch import nn

from nets import count_parameters, create_net, list_nets, net_config, net_kind, register_net
from nets.resunet import ResUNet

EXPECTED = {
    "joint_chain": "joint",
    "joint_resunet": "joint",
    "patch_critic": "critic",
    "resunet": "dense",
    "swin_unetr": "dense",
    "slicewise": "dense",
    "slicewise_joint": "joint",
    "slicewise_critic": "critic",
}


def test_expected_nets_are_registered():
    assert set(EXPECTED) <= set(list_nets())
    assert {name: net_kind(name) for name in EXPECTED} == EXPECTED
    assert list_nets("critic") == ["patch_critic", "slicewise_critic"]
    assert list_nets() == sorted(list_nets())


def test_duplicate_name_raises_and_keeps_the_original():
    with pytest.raises(ValueError, match="already registered"):
        register_net("resunet")(nn.Identity)
    assert isinstance(create_net("resunet", channels=(4,), num_res_blocks=0), ResUNet)


@pytest.mark.parametrize(
    ("name", "kind"), [("", "dense"), (None, "dense"), ("brand_new_net", "generator")]
)
def test_register_net_rejects_bad_name_or_kind(name, kind):
    with pytest.raises(ValueError):
        register_net(name, kind=kind)


def test_unknown_name_lists_registered_nets():
    with pytest.raises(ValueError, match="resunet"):
        create_net("no_such_net")
    with pytest.raises(ValueError):
        list_nets("no_such_kind")


def test_unknown_argument_is_a_value_error():
    with pytest.raises(ValueError, match="chanels"):
        create_net("resunet", chanels=(8, 16))


def test_spec_records_defaults_and_is_a_copy():
    net = create_net("resunet", out_channels=3)
    spec = net_config(net)
    assert spec["name"] == "resunet"
    assert spec["kwargs"]["out_channels"] == 3
    assert spec["kwargs"]["channels"] == (16, 32, 64)
    spec["kwargs"]["out_channels"] = 5
    assert net_config(net)["kwargs"]["out_channels"] == 3


def test_net_config_needs_create_net():
    with pytest.raises(ValueError, match="create_net"):
        net_config(nn.Conv3d(1, 1, 1))


@pytest.mark.parametrize("name", list_nets())
def test_rebuild_from_checkpoint_spec(name):
    net = create_net(name)
    buffer = io.BytesIO()
    torch.save({"net": net_config(net), "state_dict": net.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    twin = create_net(checkpoint["net"]["name"], **checkpoint["net"]["kwargs"])
    twin.load_state_dict(checkpoint["state_dict"])
    shapes = {key: value.shape for key, value in net.state_dict().items()}
    assert {key: value.shape for key, value in twin.state_dict().items()} == shapes


@pytest.mark.parametrize("name", list_nets())
def test_parameter_count_at_defaults(name):
    count = count_parameters(create_net(name))
    print(f"{name}: {count} parameters")
    assert count > 0
