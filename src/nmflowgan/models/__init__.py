"""Networks and what is done to them: the NoiseModel (pixel-wise flow on latents correlated by the latent
correlation, then the UNet refiner where there is one), its one composition and its fast sampling form, the WGAN
critic, DnCNN, growing a trained model by new cameras (adaptation), and safetensors model files."""
