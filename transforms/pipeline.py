"""The training/evaluation transform chain of ``volumetric.data.dataset.make_dataset``.

Deterministic part (cached by ``CacheDataset``): load ``target`` (highest exposure) and
``label`` (int64) channel first, pad them to the patch size if smaller, normalise ``target``, cache the
voxel indices of each class for patch sampling, and (``preload_exposures``) load, pad and
normalise every exposure. Random part, per sample per call: choose the input exposure
(``image``, ``exposure_days``), crop class-balanced patches from ``image``/``target``/``label``
(normalise ``image`` here when exposures are not preloaded), flip and rotate in the XY plane. Random steps never modify their inputs in place, so the cache can be
shared without copies (``copy_cache=False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.transforms import (
    CastToTyped,
    ClassesToIndicesd,
    Compose,
    DeleteItemsd,
    MapTransform,
    LoadImaged,
    RandCropByLabelClassesd,
    RandSpatialCropSamplesd,
    SpatialPadd,
)

from transforms.exposure import LoadExposuresd, SelectExposured
from transforms.normalise import ScatteringNormalise, ScatteringNormalised
from transforms.spatial import xy_augmentations

__all__ = ["NUM_CLASSES", "DEFAULT_CLASS_RATIOS", "Copyd", "training_transforms"]

from volumetric.schema import NUM_CLASSES  # noqa: E402  (one class table)
DEFAULT_CLASS_RATIOS = (1.0, 1.0, 1.0, 2.0, 2.0)  # patch centres: concrete, rebar, duct, void, unknown
_INDICES_KEY = "label_cls_indices"


def training_transforms(
    normalisation: Mapping,
    patch_size: Sequence[int] | None = (64, 64, 64),
    sampling: str = "log-uniform",
    fixed_days: float | None = None,
    num_samples: int = 1,
    augment: bool = True,
    class_ratios: Sequence[float] | None = None,
    preload_exposures: bool = True,
    with_labels: bool = True,
    keep_metadata: bool = False,
    channels: Sequence[str] | None = None,
) -> Compose:
    """Compose the chain for records ``{"exposures": {days: path}, "target": path, "label": path}``.

    Args:
        normalisation: ``channels/1`` parameters (``transforms.normalise``).
        patch_size: patch ``(X, Y, Z)`` in voxels, or ``None`` for whole volumes.
        sampling, fixed_days: exposure choice (``transforms.exposure``).
        num_samples: patches per volume per call.
        augment: XY flips and rotations (rotations only for square XY patches).
        class_ratios: patch-centre ratios per class (default ``DEFAULT_CLASS_RATIOS``).
        preload_exposures: load all exposures in the cached part.
        with_labels: records carry a ``label`` (imported cases may not).
        keep_metadata: patches stay MONAI ``MetaTensor`` (affine, ``meta["normalisation"]``);
            by default patches are plain tensors (whole volumes always keep their metadata).
        channels: names of the exposure files' channels (default: those of ``normalisation``).
    """
    normalise = ScatteringNormalise(normalisation, channels)
    volume_keys = ["image", "target"] + (["label"] if with_labels else [])
    steps = [LoadImaged(["target"] + (["label"] if with_labels else []), image_only=True, ensure_channel_first=True)]
    if with_labels:
        steps.append(CastToTyped("label", dtype=torch.int64))
    if patch_size is not None:
        steps.append(SpatialPadd(volume_keys[1:], spatial_size=patch_size))
        if with_labels:
            steps.append(ClassesToIndicesd("label", indices_postfix="_cls_indices", num_classes=NUM_CLASSES))
    steps.append(ScatteringNormalised("target", normalisation, normalise.channels))
    if preload_exposures:  # cache every exposure, padded and normalised
        steps.append(LoadExposuresd("exposures", pad_to=patch_size, transform=normalise))
    steps.append(SelectExposured(sampling=sampling, fixed_days=fixed_days))
    if patch_size is not None:
        if not preload_exposures:
            steps.append(SpatialPadd("image", spatial_size=patch_size))
        steps.append(_patch_sampler(volume_keys, patch_size, num_samples, class_ratios, with_labels))
    if not preload_exposures:
        steps.append(ScatteringNormalised("image", normalisation, normalise.channels))
    if with_labels and patch_size is not None:
        steps.append(DeleteItemsd(_INDICES_KEY))
    # own storage (crops are views of the shared cache); plain tensors flip and collate several times faster
    steps.append(Copyd(volume_keys, plain=patch_size is not None and not keep_metadata))
    if augment:
        square = patch_size is not None and patch_size[0] == patch_size[1]
        steps.append(xy_augmentations(volume_keys, rotate=square or patch_size is None))
    return Compose(steps)


class Copyd(MapTransform):
    """Give ``keys`` their own storage: a clone, as a plain tensor when ``plain`` (drops MONAI metadata)."""

    def __init__(self, keys, plain: bool = False, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.plain = plain

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            d[key] = (value.as_tensor() if self.plain and hasattr(value, "as_tensor") else value).clone()
        return d


def _patch_sampler(keys, patch_size, num_samples, class_ratios, with_labels):
    if not with_labels:
        return RandSpatialCropSamplesd(keys, roi_size=patch_size, num_samples=num_samples, random_size=False)
    ratios = list(class_ratios or DEFAULT_CLASS_RATIOS)
    if len(ratios) != NUM_CLASSES or any(r < 0 for r in ratios) or not any(ratios):
        raise ValueError(f"class_ratios must be {NUM_CLASSES} non-negative numbers, not all zero, got {ratios}")
    return RandCropByLabelClassesd(keys, label_key="label", spatial_size=patch_size, ratios=ratios,
                                   num_classes=NUM_CLASSES, num_samples=num_samples, indices_key=_INDICES_KEY,
                                   warn=False)
