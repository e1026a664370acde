"""How much of the target-domain label survives G's first norm layer? (Why IN is slow to learn on our task.)

StarGAN feeds the target domain as constant label channels. After the stem conv the label adds a spatially constant
offset per channel (except near the zero-padded borders). Instance Norm subtracts each channel's spatial mean per
sample, so it erases most of that offset; batch statistics keep it, because labels differ across the batch. This
script changes one sample's label in a batch of mixed labels and prints how much that sample's features change after
the stem's norm layer, in the interior and in the border rows, for each norm layer (fresh G, seed 0).

    python benchmarks/label_signal.py
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gan.models.generator import Generator  # noqa: E402
from gan.norms import make_norm  # noqa: E402

NORMS = {"instance": {}, "batch": {}, "layer": {}, "group": {"num_groups": 8}, "batch_instance": {}, "none": {}}


def label_maps(labels: torch.Tensor, num_domains: int, size: int) -> torch.Tensor:
    return torch.eye(num_domains)[labels][:, :, None, None].expand(-1, -1, size, size)


def main() -> None:
    size, domains = 32, 4
    x = torch.rand(16, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(16) % domains
    changed = labels.clone()
    changed[0] = (changed[0] + 2) % domains
    print("| G norm | interior change | border-row change | feature scale | interior change / scale |")
    print("|---|---|---|---|---|")
    for name, options in NORMS.items():
        torch.manual_seed(0)
        G = Generator(domains, 32, 3, functools.partial(make_norm, name, **options)).train()
        stem = G.main[:2]  # 7x7 conv + norm layer
        with torch.no_grad():
            a = stem(torch.cat([x, label_maps(labels, domains, size)], 1))[0]
            b = stem(torch.cat([x, label_maps(changed, domains, size)], 1))[0]
        diff, scale = (a - b).abs(), a.abs().mean()
        interior = diff[:, 4:-4, 4:-4].mean()
        border = diff[:, :3, :].mean()
        print(f"| `{name}` | {interior:.4f} | {border:.4f} | {scale:.3f} | {interior / scale:.2f} |")


if __name__ == "__main__":
    main()
