"""Data sources: simcam, SIDD trees and blocks, paired folders, patches."""
