"""Training: typed configs, the training loop per task, losses."""
