"""Evaluation: metrics, object lists, whole-volume evaluation of runs, separability of the statistics."""
