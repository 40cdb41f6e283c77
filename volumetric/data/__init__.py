"""Data: files (NIfTI, HDF5, JSON), case folders, datasets (build, read, validate, MONAI), track import."""
