"""Physics: materials, block geometry, cosmic muons, transport, detector, PoCA, per-voxel statistics, the simulation chain."""
