"""Training: one loop (loop.py) and its phases (diffusion.py, autoencoder.py), the loss and jitted step of diffusion (step.py), checkpoints (checkpoint.py)."""
