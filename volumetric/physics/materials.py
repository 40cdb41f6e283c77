"""Material table: radiation length, density and continuous energy loss.

Sources:
    * Radiation lengths ``X0`` (g/cm^2) and densities: PDG "Atomic and nuclear properties of
      materials" (pdg.lbl.gov/AtomicNuclearProperties), Tsai's formula; mixtures by the Bragg
      rule ``1/X0 = sum_i w_i / X0_i`` (w_i mass fractions). Values follow
      ``shared/docs/PHYSICS.md`` section 3.
    * Energy loss ``dE/dx`` (MeV cm^2/g): PDG minimum-ionisation values from the same tables.
      Cosmic muons of a few GeV/c lose a few percent more (relativistic rise); we use the
      minimum-ionising value as the continuous loss and say so here.

Every material is addressed by name; its integer id is its index in ``MATERIAL_NAMES``
(id 0 is concrete, the block's bulk, so a zero-initialised map is plain concrete).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Material",
    "MATERIALS",
    "MATERIAL_NAMES",
    "material_id",
    "get_material",
    "inverse_radiation_length_table_per_mm",
    "stopping_power_table_mev_per_mm",
]


@dataclass(frozen=True)
class Material:
    """One homogeneous material.

    Attributes:
        name: key in ``MATERIALS``.
        density_g_cm3: mass density in g/cm^3.
        x0_g_cm2: radiation length in g/cm^2.
        dedx_mev_cm2_g: continuous (minimum-ionising) energy loss in MeV cm^2/g.
    """

    name: str
    density_g_cm3: float
    x0_g_cm2: float
    dedx_mev_cm2_g: float

    @property
    def x0_mm(self) -> float:
        """Radiation length in mm (``10 * X0[g/cm^2] / rho[g/cm^3]``)."""
        return 10.0 * self.x0_g_cm2 / self.density_g_cm3

    @property
    def stopping_power_mev_per_mm(self) -> float:
        """Energy loss per mm of path, MeV/mm (``0.1 * dE/dx * rho``)."""
        return 0.1 * self.dedx_mev_cm2_g * self.density_g_cm3


_TABLE = (
    # name,      rho g/cm3, X0 g/cm2, dE/dx MeV cm2/g (PDG min. ionisation)
    ("concrete", 2.30, 26.57, 1.711),  # PDG "shielding concrete"
    ("steel", 7.874, 13.84, 1.451),  # PDG iron
    ("air", 1.205e-3, 36.62, 1.815),  # PDG dry air, 20 C, 1 atm
    ("hdpe", 0.94, 44.77, 2.079),  # PDG polyethylene, HDPE density
    ("pvc", 1.30, 25.51, 1.778),  # PDG polyvinyl chloride
    ("grout", 2.00, 26.7, 1.72),  # cement grout: concrete-like composition, lower density
    ("water", 1.00, 36.08, 1.992),  # PDG liquid water
    ("aluminium", 2.699, 24.01, 1.615),  # PDG Al
    ("copper", 8.96, 12.86, 1.403),  # PDG Cu
    ("lead", 11.35, 6.37, 1.122),  # PDG Pb
    ("wood", 0.60, 40.0, 1.90),  # approx. cellulose (C6H10O5), dry wood density
    ("rust", 5.24, 16.87, 1.52),  # Fe2O3 by the Bragg rule (Fe 0.699, O 0.301)
)

MATERIALS: dict[str, Material] = {row[0]: Material(*row) for row in _TABLE}
MATERIAL_NAMES: tuple[str, ...] = tuple(row[0] for row in _TABLE)


def get_material(name: str) -> Material:
    """Return the material called ``name``; ``KeyError`` lists the known names."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise KeyError(f"unknown material {name!r}; known: {', '.join(MATERIAL_NAMES)}") from None


def material_id(name: str) -> int:
    """Integer id of a material (its index in ``MATERIAL_NAMES``)."""
    get_material(name)
    return MATERIAL_NAMES.index(name)


def inverse_radiation_length_table_per_mm() -> np.ndarray:
    """``1/X0`` in 1/mm for every material id, float64 array of length ``len(MATERIAL_NAMES)``."""
    return np.array([1.0 / MATERIALS[n].x0_mm for n in MATERIAL_NAMES], dtype=np.float64)


def stopping_power_table_mev_per_mm() -> np.ndarray:
    """Energy loss in MeV/mm for every material id."""
    return np.array([MATERIALS[n].stopping_power_mev_per_mm for n in MATERIAL_NAMES])
