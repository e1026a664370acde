"""Models: the StarGAN-style generator and the PatchGAN discriminator with a domain head (plain arguments; the
config is turned into them by ``gan.build``)."""

from gan.models.discriminator import Discriminator
from gan.models.generator import Generator

__all__ = ["Discriminator", "Generator"]
