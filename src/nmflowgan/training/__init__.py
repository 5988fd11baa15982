"""Training: the run loop both trainers share, the noise-model trainer (which trains whatever Trainee it is given),
the adaptation stage that builds one from a trained base, the denoiser trainer, checkpoints, run folders, batching
and scale-out with torch.distributed."""
