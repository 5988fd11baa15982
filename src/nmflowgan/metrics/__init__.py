"""Metrics of noise realism (KLD, AKLD, noise statistics) and image quality (PSNR, SSIM)."""
