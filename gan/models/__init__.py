"""Models: the StarGAN-style generator and the PatchGAN discriminator with a domain head."""

from gan.models.discriminator import Discriminator, build_discriminator
from gan.models.generator import Generator, build_generator

__all__ = ["Discriminator", "Generator", "build_discriminator", "build_generator"]
