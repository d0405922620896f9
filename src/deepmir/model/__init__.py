"""The DEEPMIR network, its preprocessing and its safetensors checkpoint."""
