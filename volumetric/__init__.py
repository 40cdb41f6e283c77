"""volumetric: 3D muon scattering tomography of reinforced concrete.

Simulation (``muons``, ``transport``, ``detector``, ``reconstruction``, ``simulate``), block
geometry (``geometry``, ``materials``) and files (``io``, ``case``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("volumetric")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
