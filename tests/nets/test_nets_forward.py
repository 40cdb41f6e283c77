"""Every registered net: forward/backward, shapes, 2D variants, input checks, conditioning,
and the WGAN-GP double backward through the critic. Tiny CPU inputs."""

import pytest
import torch

from nets import create_net, list_nets, net_kind

NATIVE = [name for name in list_nets() if not name.startswith("slicewise")]  # wrappers: test_slicewise.py
ALL = NATIVE
GENERATORS = [name for name in list_nets("dense") + list_nets("joint") if name in NATIVE]
MODES = ("film", "channel")


def _input(net, spatial_dims=3, batch=2):
    """Smallest input the net accepts: (B, C, 2m, m, m) with m its size multiple."""
    m = net.size_multiple
    spatial = (2 * m,) + (m,) * (spatial_dims - 1)
    return torch.randn(batch, net.in_channels, *spatial)


def _expected_shapes(net, x):
    spatial = tuple(x.shape[2:])
    kind = net_kind(net.net_spec["name"])
    if kind == "critic":
        return tuple(size // net.size_multiple for size in spatial), 1
    if kind == "joint":
        return {"image": (x.shape[0], 1, *spatial), "logits": (x.shape[0], net.num_classes, *spatial)}
    return (x.shape[0], net.out_channels, *spatial)


def _outputs(out):
    return list(out.values()) if isinstance(out, dict) else [out]


def _check_forward_backward(net, x):
    out = net(x)
    expected = _expected_shapes(net, x)
    if isinstance(out, dict):
        assert {key: tuple(value.shape) for key, value in out.items()} == expected
    elif isinstance(expected, tuple) and len(expected) == 2 and isinstance(expected[1], int):
        assert tuple(out.shape) == (x.shape[0], expected[1], *expected[0])
    else:
        assert tuple(out.shape) == expected
    assert all(torch.isfinite(value).all() for value in _outputs(out))
    sum(value.square().mean() for value in _outputs(out)).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_3d(name):
    torch.manual_seed(0)
    net = create_net(name)
    _check_forward_backward(net, _input(net))


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_2d(name):
    torch.manual_seed(0)
    net = create_net(name, spatial_dims=2)
    _check_forward_backward(net, _input(net, spatial_dims=2))


@pytest.mark.parametrize("name", ALL)
def test_bad_input_size_names_the_multiple(name):
    net = create_net(name)
    m = net.size_multiple
    x = torch.randn(1, net.in_channels, 2 * m, m, m + m // 2)
    with pytest.raises(ValueError, match=f"must be divisible by {m} for this {name}"):
        net(x)


@pytest.mark.parametrize("name", ALL)
def test_bad_input_rank_or_channels(name):
    net = create_net(name)
    x = _input(net, batch=1)
    with pytest.raises(ValueError, match="input channels"):
        net(torch.cat([x, x], dim=1))
    with pytest.raises(ValueError, match="5-D input"):
        net(x[:, :, 0])


@pytest.mark.parametrize("name", ALL)
def test_one_voxel_coarsest_level_with_instance_norm(name):
    net = create_net(name)
    m = net.size_multiple
    with pytest.raises(ValueError, match="instance norm"):
        net(torch.randn(2, net.in_channels, m, m, m))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kwargs", [{"spatial_dims": 4}, {"in_channels": 0}, {"in_channels": 1.5}])
def test_bad_common_arguments(name, kwargs):
    with pytest.raises(ValueError):
        create_net(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("resunet", {"channels": ()}),
        ("resunet", {"channels": (16, 0)}),
        ("resunet", {"out_channels": 0}),
        ("resunet", {"num_res_blocks": -1}),
        ("resunet", {"dropout": 1.5}),
        ("resunet", {"conditioning": "concat"}),
        ("swin_unetr", {"feature_size": 16}),
        ("swin_unetr", {"depths": (1, 1, 1)}),
        ("swin_unetr", {"num_heads": (5, 6, 12, 24)}),
        ("joint_resunet", {"num_classes": 1}),
        ("joint_chain", {"upsampler": "patch_critic"}),
        ("joint_chain", {"segmenter_kwargs": {"in_channels": 3}}),
        ("patch_critic", {"norm": "batch"}),
        ("patch_critic", {"in_channels": 1}),
        ("patch_critic", {"num_layers": 0}),
    ],
)
def test_bad_specific_arguments(name, kwargs):
    with pytest.raises(ValueError):
        create_net(name, **kwargs)


def _conditioned(name, mode):
    if name == "joint_chain":
        return create_net(name, upsampler_kwargs={"conditioning": mode})
    return create_net(name, conditioning=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", GENERATORS)
def test_conditioning_changes_the_output(name, mode):
    torch.manual_seed(0)
    net = _conditioned(name, mode)
    x = _input(net)
    with torch.no_grad():
        short, long = net(x, torch.tensor([1.0, 1.0])), net(x, torch.tensor([30.0, 30.0]))
    for a, b in zip(_outputs(short), _outputs(long)):
        assert (a - b).abs().max() > 1e-6


@pytest.mark.parametrize("name", ["resunet", "joint_resunet"])
def test_film_parameters_receive_gradients(name):
    torch.manual_seed(0)
    net = _conditioned(name, "film")
    out = net(_input(net), torch.tensor([2.0, 30.0]))
    sum(value.square().mean() for value in _outputs(out)).backward()
    film = [p.grad for n, p in net.named_parameters() if "film" in n]
    assert len(film) == 4
    assert all(g is not None and g.abs().sum() > 0 for g in film)


@pytest.mark.parametrize("name", GENERATORS)
def test_exposure_argument_errors(name):
    plain = create_net(name)
    x = _input(plain)
    with pytest.raises(ValueError, match="without conditioning|neither part"):
        plain(x, torch.tensor([1.0, 2.0]))
    net = _conditioned(name, "film")
    with pytest.raises(ValueError, match="needs exposure_days"):
        net(x)
    with pytest.raises(ValueError, match="shape"):
        net(x, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="positive"):
        net(x, torch.tensor([1.0, 0.0]))


def test_swin_forward_matches_monai():
    torch.manual_seed(0)
    net = create_net("swin_unetr").eval()
    x = _input(net, batch=1)
    with torch.no_grad():
        assert torch.allclose(net(x), net.swin(x), atol=1e-6)


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_gradient_penalty_double_backward(spatial_dims):
    torch.manual_seed(0)
    critic = create_net("patch_critic", spatial_dims=spatial_dims, channels=8)
    shape = (2, 1) + (16,) * spatial_dims
    cond, real, fake = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    alpha = torch.rand((2,) + (1,) * (spatial_dims + 1))
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(cond, mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    penalty.backward()
    grads = {n: p.grad for n, p in critic.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    weights = [g for n, g in grads.items() if n.endswith("weight")]
    assert weights and all(g is not None and g.abs().sum() > 0 for g in weights)


def test_critic_candidate_must_match_condition():
    critic = create_net("patch_critic")
    with pytest.raises(ValueError, match="must match"):
        critic(torch.randn(1, 1, 16, 16, 16), torch.randn(1, 1, 16, 16, 8))
