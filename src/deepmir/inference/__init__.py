"""Inference: sliding-window prediction and post-processing into lesions."""
