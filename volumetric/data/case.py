"""One simulated block written as a folder: geometry, label map, exposure volumes, preview.

Folder layout (all NIfTI ``(X, Y, Z[, C])``, z up, affine = voxel size and block origin in mm)::

    geometry.json               the block description (volumetric-geometry/1)
    label.nii.gz                uint8 classes 0 concrete, 1 rebar, 2 duct, 3 void, 4 unknown
    inv_x0_per_mm.nii.gz        float32 true 1/X0 (1/mm): the analytic "ideal density" target
    exposures/<days>d.nii.gz    float32 (X, Y, Z, C): the statistics channels of volumetric.schema
                                (PoCA and path sums), cumulative over [0, days]; their names are in
                                the file (NIfTI comment extension) and in simulation.json
    exposures/<days>d_mean_theta2_mrad2.nii.gz
                                float32 (X, Y, Z): mean theta^2 per voxel in mrad^2 (0 where no PoCA),
                                an image for a viewer such as 3D Slicer (single cases only, see
                                ``simulate_case``'s ``mean_theta2_nifti``; dataset builds skip it)
    simulation.json             settings, seed, detector, muon counts, measured PoCA points and path
                                tracks per voxel of every exposure, software version
    preview.png                 XY and XZ slices of mean theta^2 and of the label map
    .volumetric-output          marker: written by volumetric (``--overwrite`` clears only marked folders)

The folder is built under a temporary name and renamed into place when complete, so a killed
run leaves no half-written case under the final name. An existing non-empty folder is never
overwritten unless asked, and never if it lacks the marker (:func:`check_output_folder`).
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from volumetric.physics.detector import Detector, default_detector
from volumetric.physics.geometry import Block, RasterisedBlock, check_voxel_size, rasterise, save_geometry
from volumetric.physics.kernels import kernel_for
from volumetric.data.io import TrackWriter, check_output_folder, exposure_filename, save_nifti, save_statistics
from volumetric.data.io import mean_theta2_filename, output_folder
from volumetric.physics.muons import EcoMugFlux
from volumetric.schema import CHANNEL_NAMES, DEFAULT_THETA_THRESHOLD_RAD
from volumetric.figures import MEAN_THETA2_LABEL, mean_theta2_mrad2, save_slice_montage
from volumetric.physics.simulate import DetectedMuons, SimulationCounts, iter_exposures
from volumetric.physics.transport import MaterialGrid

__all__ = ["material_grid", "simulate_case", "write_truth", "write_exposure"]


def material_grid(raster: RasterisedBlock) -> MaterialGrid:
    """Scattering maps of a rasterised block as a transport grid (origin at the block corner)."""
    v = float(raster.voxel_mm)
    return MaterialGrid(
        torch.from_numpy(raster.inv_x0_per_mm), torch.from_numpy(raster.stopping_power_mev_per_mm), (v, v, v)
    )


def _track_records(muons: DetectedMuons) -> dict[str, np.ndarray]:
    return {
        "p_gev": muons.p_gev.cpu().numpy(),
        "t_s": muons.t_s.cpu().numpy(),
        "in_pos_mm": muons.in_pos_mm.cpu().numpy(),
        "in_dir": muons.in_dir.cpu().numpy(),
        "out_pos_mm": muons.out_pos_mm.cpu().numpy(),
        "out_dir": muons.out_dir.cpu().numpy(),
        "poca_mm": muons.poca.point_mm.cpu().numpy(),
        "theta_rad": muons.poca.theta_rad.cpu().numpy(),
    }


def _settings(block, voxel_mm, days, seed, detector, flux, method, chunk_muons, theta_threshold_rad) -> dict:
    from volumetric import __version__

    return {
        "software": f"volumetric {__version__}",
        "seed": int(seed),
        "voxel_mm": float(voxel_mm),
        "block_size_mm": list(block.size_mm),
        "checkpoints_days": [float(d) for d in days],
        "rate_hz_per_m2": flux.rate_hz_per_m2,
        "generated_rate_hz_per_m2": flux.window_rate_hz_per_m2,
        "p_range_gev": [flux.p_min_gev, flux.p_max_gev],
        "theta_max_rad": flux.theta_max_rad,
        "transport_method": method,
        "chunk_muons": int(chunk_muons),
        "detector": detector.to_dict(),
        "statistics_channels": list(CHANNEL_NAMES),
        "theta_threshold_rad": float(theta_threshold_rad),
        "units": {"length": "mm", "angle": "rad", "momentum": "GeV/c", "time": "s", "exposure": "days"},
    }


def simulate_case(
    block: Block,
    out_dir,
    voxel_mm: float,
    checkpoints_days,
    seed: int = 0,
    detector: Detector | None = None,
    rate_hz_per_m2: float = 166.7,
    method: str = "straight",
    chunk_muons: int = 1 << 17,
    save_tracks=None,
    device="cpu",
    progress: bool = True,
    overwrite: bool = False,
    theta_threshold_rad: float = DEFAULT_THETA_THRESHOLD_RAD,
    mean_theta2_nifti: bool = True,
    kernel: str = "auto",
) -> dict:
    """Simulate ``block`` for the longest exposure and write the case folder ``out_dir``.

    ``progress`` ``True`` shows a bar named ``simulate <folder name>``; ``mean_theta2_nifti`` also
    writes each exposure's mean theta^2 image (mrad^2) for a viewer (see :func:`write_exposure`;
    dataset builds turn it off: 14 extra files a case). ``kernel`` chooses the transport and path
    statistics code (``volumetric.physics.simulate.iter_exposures``); ``simulation.json`` records it.

    Returns:
        The ``simulation.json`` content (settings, counts, timing).

    Raises:
        ValueError: for a voxel that does not tile the block (:func:`volumetric.physics.geometry.check_voxel_size`).
        FileExistsError: for an output folder that may not be replaced (:func:`check_output_folder`).
    """
    out_dir = Path(out_dir)
    check_voxel_size(block.size_mm, voxel_mm)
    check_output_folder(out_dir, overwrite)
    if save_tracks is not None and Path(save_tracks).exists():
        raise FileExistsError(f"{save_tracks}: tracks file exists; choose another path or delete it")
    detector = detector or default_detector(block.size_mm)
    flux = EcoMugFlux(rate_hz_per_m2=rate_hz_per_m2, theta_max_rad=detector.max_zenith_rad())
    settings = _settings(block, voxel_mm, checkpoints_days, seed, detector, flux, method, chunk_muons,
                         theta_threshold_rad)
    progress = f"simulate {out_dir.name}" if progress is True else progress
    with output_folder(out_dir, "volumetric.data.case.simulate_case") as work:
        return _write_case(block, work, voxel_mm, checkpoints_days, seed, detector, flux, method, chunk_muons,
                           save_tracks, device, progress, settings, mean_theta2_nifti, kernel)


def _write_case(block, work, voxel_mm, days, seed, detector, flux, method, chunk_muons, save_tracks, device,
                progress, settings, mean_theta2_nifti, kernel) -> dict:
    start = time.perf_counter()
    raster = write_truth(work, block, voxel_mm)
    v3 = (raster.voxel_mm,) * 3
    counts = SimulationCounts()
    attributes = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in settings.items()}
    with TrackWriter(save_tracks, attributes) if save_tracks else contextlib.nullcontext() as writer:
        exposures = iter_exposures(
            material_grid(raster), detector, days, seed, flux=flux, method=method, chunk_muons=chunk_muons,
            device=device, progress=progress, counts=counts, theta_threshold_rad=settings["theta_threshold_rad"],
            kernel=kernel,
            on_chunk=(lambda muons: writer.append(_track_records(muons))) if writer else None,
        )
        last, occupancy = _write_exposures(exposures, work, v3, mean_theta2_nifti)
    summary = dict(settings)
    summary["counts"] = {k: v for k, v in vars(counts).items() if k != "extra"}
    summary["occupancy"] = occupancy
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["host"] = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                       "kernel": kernel_for(device, kernel), "threads": torch.get_num_threads()}
    (work / "simulation.json").write_text(json.dumps(summary, indent=2))
    rows = {f"simulated {days[-1]:g} d": mean_theta2_mrad2(last, CHANNEL_NAMES)}
    save_slice_montage(work / "preview.png", rows, {"true classes": raster.label}, v3, colour_label=MEAN_THETA2_LABEL)
    return summary


def _write_exposures(exposures, work: Path, voxel3, mean_theta2_nifti: bool) -> tuple[np.ndarray, dict]:
    """Write every exposure; returns the last one's sums and the measured occupancy per exposure."""
    last, occupancy = None, {}
    for exposure in exposures:
        last = exposure.sums.numpy()
        write_exposure(work, exposure.days, last, exposure.channels, voxel3, mean_theta2_nifti)
        occupancy[f"{exposure.days:g}"] = exposure.occupancy
    return last, occupancy


def write_truth(folder: Path, block: Block, voxel_mm: float) -> RasterisedBlock:
    """Write what a block is: ``geometry.json``, ``label.nii.gz`` and ``inv_x0_per_mm.nii.gz``; returns the raster."""
    raster = rasterise(block, voxel_mm)
    save_geometry(block, Path(folder) / "geometry.json")
    v3 = (raster.voxel_mm,) * 3
    save_nifti(Path(folder) / "label.nii.gz", raster.label, v3)
    save_nifti(Path(folder) / "inv_x0_per_mm.nii.gz", raster.inv_x0_per_mm.astype(np.float32), v3)
    return raster


def write_exposure(folder: Path, days: float, sums: np.ndarray, channels, voxel3,
                   mean_theta2_nifti: bool = False) -> Path:
    """Write one exposure's statistics ``(C, X, Y, Z)`` as ``exposures/<days>d.nii.gz`` with its channel names.

    With ``mean_theta2_nifti`` also ``exposures/<days>d_mean_theta2_mrad2.nii.gz``: float32 ``(X, Y, Z)``
    mean theta^2 per voxel in mrad^2 (0 where no PoCA), same affine: what a viewer (3D Slicer)
    should open, rather than the statistics file whose first channel is the PoCA count.
    Returns the statistics file.
    """
    path = save_statistics(Path(folder) / exposure_filename(days), sums, channels, voxel3)
    if mean_theta2_nifti:
        image = mean_theta2_mrad2(np.asarray(sums), channels).astype(np.float32)
        save_nifti(Path(folder) / mean_theta2_filename(days), image, voxel3)
    return path
