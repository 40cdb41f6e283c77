import numpy as np
import pytest
import torch
from torch import nn

from nets import create_net
from volumetric.inference import check_spacing, infer_nifti, output_paths, predict_volume, resolve_roi
from volumetric.io import load_nifti, save_nifti


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


def test_check_spacing_names_both_spacings():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    check_spacing(affine, 2.0)
    check_spacing(affine, (2.0, 2.0, 2.01), tolerance=0.01)
    with pytest.raises(ValueError, match=r"\(2\.0, 2\.0, 2\.0\) mm.*\(4\.0, 4\.0, 4\.0\) mm"):
        check_spacing(affine, 4.0)


def test_infer_nifti_keeps_affine_and_refuses_to_overwrite(tmp_path):
    x = _volume((20, 18, 10))[0]
    in_path = save_nifti(tmp_path / "case.nii.gz", x, (2.0, 2.0, 2.0), origin_mm=(10.0, -4.0, 0.0))
    _, affine = load_nifti(in_path)
    joint = create_net("joint_resunet", channels=(8, 16), num_res_blocks=1, num_classes=5)
    paths = infer_nifti(joint, in_path, tmp_path / "out", roi_size=(16, 16, 8), trained_voxel_mm=2.0,
                        save_probabilities=True)
    assert paths == output_paths(in_path, tmp_path / "out")
    image, a_image = load_nifti(paths["image"])
    label, a_label = load_nifti(paths["label"])
    probs, _ = load_nifti(paths["probabilities"])
    for a in (a_image, a_label):
        np.testing.assert_allclose(a, affine)
    assert image.shape == x.shape and label.dtype == np.uint8 and label.max() < 5
    assert probs.shape == (*x.shape, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(FileExistsError, match="overwrite"):
        infer_nifti(joint, in_path, tmp_path / "out", roi_size=(16, 16, 8))
    infer_nifti(joint, in_path, tmp_path / "out", roi_size=(16, 16, 8), overwrite=True)
    with pytest.raises(ValueError, match="training spacing"):
        infer_nifti(joint, in_path, tmp_path / "other", roi_size=(16, 16, 8), trained_voxel_mm=4.0)


def test_infer_nifti_upsample_then_segment(tmp_path):
    in_path = save_nifti(tmp_path / "case.nii", _volume((16, 16, 8))[0], (2.0, 2.0, 2.0))
    seg = create_net("resunet", channels=(8,), num_res_blocks=0, out_channels=5)
    paths = infer_nifti(Identity(), in_path, tmp_path, roi_size=8, segmenter=seg)
    assert sorted(paths) == ["image", "label"] and paths["image"].name == "case_upsampled.nii.gz"
    image, _ = load_nifti(paths["image"])
    np.testing.assert_allclose(image, load_nifti(in_path)[0], rtol=1e-5, atol=1e-6)
