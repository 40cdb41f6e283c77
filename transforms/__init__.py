"""MONAI-style transforms (array ``Foo`` / dictionary ``Food``) for scattering volumes.

Keys: ``image`` (input exposure), ``target`` (highest exposure), ``label``, ``exposure_days``.
Modules: ``exposure`` (choose the input exposure), ``normalise`` (invertible ``log-moments/1``
normalisation), ``spatial`` (XY-only flips and rotations), ``pipeline`` (the full chain).
"""
