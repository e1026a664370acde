"""PatchGAN discriminator (StarGAN's) with a 1-channel source head and a domain-classification head."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from gan.models.blocks import NormFactory


class Discriminator(nn.Module):
    """D(x) -> (source logits (B, 1, h, w), domain logits (B, num_domains)).

    Without ``norm_layer`` this is exactly StarGAN's D (no normalization).

    ``repeat_num`` stride-2 4x4 convs with LeakyReLU(0.01), widths doubling from ``conv_dim``; then a 3x3 conv to one
    channel (a patch map of real/fake scores) and a conv spanning the remaining map to the domain logits. Layers are
    named ``conv1``..``convN``, ``src`` and ``cls`` so that monitoring tags read well.
    """

    def __init__(
        self,
        image_size: int,
        num_domains: int,
        conv_dim: int = 64,
        repeat_num: int = 6,
        norm_layer: NormFactory | None = None,
    ) -> None:
        super().__init__()
        if image_size % 2**repeat_num:
            raise ValueError(f"image_size {image_size} is not divisible by 2**repeat_num = {2**repeat_num}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_dim, dim = 3, conv_dim
        for i in range(1, repeat_num + 1):
            # A norm layer (when asked for) follows every conv but the first, as in pix2pix's PatchGAN; its shift
            # makes the conv's bias redundant.
            norm = norm_layer(dim) if norm_layer is not None and i > 1 else None
            layers[f"conv{i}"] = nn.Conv2d(in_dim, dim, 4, 2, 1, bias=norm is None)
            if norm is not None:
                layers[f"norm{i}"] = norm
            layers[f"act{i}"] = nn.LeakyReLU(0.01)
            in_dim, dim = dim, dim * 2
        self.main = nn.Sequential(layers)
        self.src = nn.Conv2d(in_dim, 1, 3, 1, 1, bias=False)
        self.cls = nn.Conv2d(in_dim, num_domains, image_size // 2**repeat_num, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.src(h), self.cls(h).flatten(1)
