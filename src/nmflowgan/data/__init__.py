"""Data sources and what training reads from them: simcam, SIDD trees and blocks, paired folders with a
metadata.csv, image files, patches, the plausibility check of pairs, and a training's patches and validation pairs."""
