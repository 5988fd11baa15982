"""Training loops (noise model, denoiser), checkpoints, run folders and scale-out."""
