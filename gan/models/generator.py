"""StarGAN-style generator: 7x7 stem, two stride-2 down-sampling convs, residual blocks, two up-sampling
transposed convs, 7x7 conv + tanh. The target domain enters as label channels broadcast over the image."""

from __future__ import annotations

import functools

import torch
from torch import nn

from gan.models.blocks import NormFactory, ResidualBlock, conv_norm_relu
from gan.norms import make_norm


class Generator(nn.Module):
    """G(x, c): translate images ``x`` (B, 3, H, W) in [-1, 1] to the domains ``c`` (B, num_domains).

    ``c`` is a one-hot (single-label) or 0/1 (multi-label) float vector. Convolutions carry no bias when a norm
    layer follows them (the norm's shift makes it redundant), as in StarGAN.
    """

    def __init__(
        self, num_domains: int, conv_dim: int = 64, repeat_num: int = 6, norm_layer: NormFactory | None = None
    ):
        super().__init__()
        norm_layer = norm_layer or functools.partial(make_norm, "instance")
        bias = isinstance(norm_layer(conv_dim), nn.Identity)  # a norm layer's shift makes a conv bias redundant
        self.num_domains = num_domains
        layers = conv_norm_relu(nn.Conv2d(3 + num_domains, conv_dim, 7, 1, 3, bias=bias), conv_dim, norm_layer)
        dim = conv_dim
        for _ in range(2):  # down-sampling
            layers += conv_norm_relu(nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=bias), dim * 2, norm_layer)
            dim *= 2
        layers += [ResidualBlock(dim, norm_layer, bias=bias) for _ in range(repeat_num)]
        for _ in range(2):  # up-sampling
            layers += conv_norm_relu(nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=bias), dim // 2, norm_layer)
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(x.dtype).view(c.size(0), c.size(1), 1, 1).expand(-1, -1, x.size(2), x.size(3))
        return self.main(torch.cat([x, c], dim=1))
