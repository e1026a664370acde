"""Building blocks shared by the models."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


def conv_norm_relu(conv: nn.Module, out_channels: int, norm_layer: NormFactory) -> list[nn.Module]:
    """A convolution followed by a norm layer and ReLU."""
    return [conv, norm_layer(out_channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """x + (conv3x3 -> norm -> ReLU -> conv3x3 -> norm)(x), as in StarGAN's generator."""

    def __init__(self, dim: int, norm_layer: NormFactory, bias: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=bias),
            norm_layer(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=bias),
            norm_layer(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
