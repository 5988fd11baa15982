"""Networks: the UNet refiner, the WGAN critic, DnCNN, and the NoiseModel that joins flow and refiner."""
