"""Slice-wise 2D wrappers: same volumes in and out as the 3D nets, no context across z."""

import pytest
import torch

from nets import create_net


def _volume(batch=2, channels=1, z=5):
    return torch.randn(batch, channels, 16, 8, z)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("slicewise", {"net_kwargs": {"channels": (4, 8), "num_res_blocks": 1}}),
        ("slicewise", {"out_channels": 5, "net": "swin_unetr"}),
        ("slicewise_joint", {"num_classes": 5, "net_kwargs": {"channels": (4, 8), "num_res_blocks": 1}}),
    ],
)
def test_generators_keep_the_volume_shape_and_backpropagate(name, kwargs):
    torch.manual_seed(0)
    net = create_net(name, **kwargs)
    x = torch.randn(1, 1, 64, 32, 3) if kwargs.get("net") == "swin_unetr" else _volume()
    out = net(x)
    outs = out if isinstance(out, dict) else {"out": out}
    for key, value in outs.items():
        channels = net.num_classes if key == "logits" else (1 if key == "image" else net.out_channels)
        assert value.shape == (x.shape[0], channels, *x.shape[2:])
        assert torch.isfinite(value).all()
    sum(v.square().mean() for v in outs.values()).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_each_slice_is_processed_alone():
    """Changing one z-slice changes the output in that slice only (no 3D context)."""
    torch.manual_seed(0)
    net = create_net("slicewise", net_kwargs={"channels": (4, 8), "num_res_blocks": 1}).eval()
    x = _volume(batch=1)
    y = x.clone()
    y[..., 2] += 1.0
    with torch.no_grad():
        diff = (net(x) - net(y)).abs().amax(dim=(0, 1, 2, 3))
    assert diff[2] > 1e-4
    assert torch.all(diff[[0, 1, 3, 4]] == 0)
    with torch.no_grad():  # and it equals the 2D net run on that slice
        assert torch.allclose(net(x)[..., 3], net.net(x[..., 3]), atol=1e-6)


def test_exposure_reaches_every_slice_of_its_own_sample():
    torch.manual_seed(0)
    net = create_net("slicewise", net_kwargs={"channels": (4, 8), "num_res_blocks": 1, "conditioning": "film"}).eval()
    x = _volume(batch=2)
    with torch.no_grad():
        out = net(x, torch.tensor([1.0, 30.0]))
        first = net.net(x[:1, ..., 4], torch.tensor([1.0]))
        second = net.net(x[1:, ..., 4], torch.tensor([30.0]))
    assert torch.allclose(out[:1, ..., 4], first, atol=1e-6)
    assert torch.allclose(out[1:, ..., 4], second, atol=1e-6)


def test_critic_scores_every_slice_and_has_a_gradient_penalty():
    torch.manual_seed(0)
    critic = create_net("slicewise_critic", net_kwargs={"channels": 4, "num_layers": 2})
    cond, real = _volume(z=3), _volume(z=3)
    mixed = real.clone().requires_grad_(True)
    scores = critic(cond, mixed)
    assert scores.shape == (2, 1, 16 // critic.size_multiple, 8 // critic.size_multiple, 3)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("slicewise", {"net": "patch_critic"}, "wraps 'dense' nets"),
        ("slicewise", {"net_kwargs": {"spatial_dims": 3}}, "must not set"),
        ("slicewise_joint", {"net": "resunet"}, "wraps 'joint' nets"),
        ("slicewise_critic", {"net_kwargs": {"in_channels": 3}}, "must not set"),
        ("slicewise", {"in_channels": 0}, "in_channels"),
    ],
)
def test_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_net(name, **kwargs)


def test_bad_input_rank_and_xy_size():
    net = create_net("slicewise")
    with pytest.raises(ValueError, match="5-D input"):
        net(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 12, 16, 3))
