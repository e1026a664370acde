"""spectral-gan: StarGAN-style image-to-image GANs with a spectrally normalised discriminator."""

__version__ = "0.1.0"
