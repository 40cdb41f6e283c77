import numpy as np
import pytest
import torch
from torch import nn

from nets import create_net
from volumetric.infer.sliding_window import check_spacing, predict_volume, resolve_roi, window_count


class Identity(nn.Module):
    """Returns its input; ``size_multiple`` as a real net would declare."""

    def __init__(self, size_multiple: int = 1):
        super().__init__()
        self.in_channels = 1
        self.size_multiple = size_multiple
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, exposure_days=None):
        return x * self.scale


class Constant(Identity):
    def forward(self, x, exposure_days=None):
        return torch.full((x.shape[0], 2, *x.shape[2:]), 3.5)


class WindowCounter(Identity):
    """Identity that records the batch size of every forward pass."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x, exposure_days=None):
        self.batches.append(x.shape[0])
        return x * self.scale


class ExposureEcho(Identity):
    """Output = log(days) everywhere; fails unless every window gets a (B,) exposure."""

    def forward(self, x, exposure_days=None):
        assert exposure_days.shape == (x.shape[0],)
        return torch.log(exposure_days)[:, None, None, None, None].expand(x.shape).clone()


def _volume(shape=(37, 29, 13)):
    return np.random.default_rng(0).random((1, *shape)).astype(np.float32)


@pytest.mark.parametrize(("multiple", "mode"), [(1, "gaussian"), (8, "gaussian"), (8, "constant")])
def test_identity_net_gives_back_odd_sized_block_without_seams(multiple, mode):
    x = _volume()
    y = predict_volume(Identity(multiple), x, roi_size=16, mode=mode)
    assert y.shape == (1, 37, 29, 13) and y.device.type == "cpu"
    np.testing.assert_allclose(y.numpy(), x, rtol=1e-5, atol=1e-6)


def test_constant_net_gives_a_constant_and_exposure_reaches_every_window():
    x = torch.as_tensor(_volume())
    y = predict_volume(Constant(), x, roi_size=(16, 8, 8), sw_batch_size=3)
    np.testing.assert_allclose(y.numpy(), 3.5, rtol=1e-6)
    y = predict_volume(ExposureEcho(), x, roi_size=16, sw_batch_size=3, exposure_days=7.0)
    np.testing.assert_allclose(y.numpy(), np.log(7.0), rtol=1e-5)


def test_thin_block_roi_is_clamped_to_the_size_multiple():
    assert resolve_roi((32, 32, 32), (100, 100, 20), 8) == (32, 32, 24)
    assert resolve_roi(16, (37, 29, 13), 1) == (16, 16, 13)
    with pytest.raises(ValueError, match="multiple of 8"):
        resolve_roi((30, 32, 32), (100, 100, 20), 8)


def test_real_resunet_and_joint_net_shapes():
    x = _volume((20, 18, 10))
    net = create_net("resunet", channels=(8, 16), num_res_blocks=1)
    net.train()
    y = predict_volume(net, x, roi_size=(16, 16, 8))
    assert y.shape == (1, 20, 18, 10) and torch.isfinite(y).all() and net.training  # mode restored
    joint = create_net("joint_resunet", channels=(8, 16), num_res_blocks=1, num_classes=5, conditioning="film")
    out = predict_volume(joint, x, roi_size=(16, 16, 8), exposure_days=2.0, amp=True)
    assert out["image"].shape == (1, 20, 18, 10) and out["logits"].shape == (5, 20, 18, 10)
    assert out["logits"].dtype == torch.float32


def test_bad_inputs_give_clear_errors():
    x = _volume((16, 16, 8))
    with pytest.raises(ValueError, match="expects 1 input channel"):
        predict_volume(Identity(), np.concatenate([x, x]), roi_size=8)
    bad = x.copy()
    bad[0, 3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predict_volume(Identity(), bad, roi_size=8)
    with pytest.raises(ValueError, match=r"\(C, X, Y, Z\)"):
        predict_volume(Identity(), x[0], roi_size=8)
    with pytest.raises(ValueError, match="exposure_days"):
        predict_volume(ExposureEcho(), x, roi_size=8, exposure_days=-1.0)
    with pytest.raises(ValueError, match="progress must be True, False or a bar name"):
        predict_volume(Identity(), x, roi_size=8, progress=3)


@pytest.mark.parametrize(("shape", "roi", "overlap"), [((37, 29, 13), (16, 16, 8), 0.25), ((37, 29, 13), (16, 16, 13), 0.5),
                                                       ((40, 40, 8), (16, 16, 8), 0.0), ((5, 40, 8), (5, 16, 8), 0.9)])
def test_window_count_is_the_number_of_windows_monai_runs(shape, roi, overlap):
    net = WindowCounter()
    predict_volume(net, _volume(shape), roi_size=roi, overlap=overlap, sw_batch_size=3)
    assert sum(net.batches) == window_count(shape, roi, overlap)
    assert len(net.batches) == -(-window_count(shape, roi, overlap) // 3)


def test_a_named_progress_bar_counts_every_window(capsys):
    predict_volume(Identity(), _volume(), roi_size=16, sw_batch_size=3, progress="segmenter")
    n = window_count((37, 29, 13), (16, 16, 13), 0.25)
    err = capsys.readouterr().err
    assert "segmenter: 100%" in err and f"{n}/{n}" in err and "window/s" in err
    predict_volume(Identity(), _volume(), roi_size=16, progress=False)
    assert "segmenter" not in capsys.readouterr().err


def test_check_spacing_names_both_spacings():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    check_spacing(affine, 2.0)
    check_spacing(affine, (2.0, 2.0, 2.01), tolerance=0.01)
    with pytest.raises(ValueError, match=r"\(2\.0, 2\.0, 2\.0\) mm.*\(4\.0, 4\.0, 4\.0\) mm"):
        check_spacing(affine, 4.0)
