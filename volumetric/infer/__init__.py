"""Inference: checkpoints, the input pipeline of a trained model, sliding windows with TTA, the predictor."""
