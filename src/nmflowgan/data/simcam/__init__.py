"""simcam: the built-in camera simulator (unprocess -> raw noise -> camera pipeline)."""

from nmflowgan.data.simcam.camera import VirtualCamera, builtin_cameras
from nmflowgan.data.simcam.generate import simulate

__all__ = ["VirtualCamera", "builtin_cameras", "simulate"]
