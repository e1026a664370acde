"""Discriminator step time with our spectral norm vs torch.nn.utils.parametrizations.spectral_norm, side by side.

One "step" is what a StarGAN critic update costs: D on reals, D on fakes, D on interpolates with the gradient
penalty (double backward), one backward and an optimizer step. Each variant is timed in the same process on the same
inputs, interleaved round by round so that drift of a shared machine hits all of them alike; the script prints the
median step time of each and its ratio to torch's parametrization (target: ours <= 1.0x).

    python benchmarks/sn_speed.py                      # default 32 px D and StarGAN's 128 px D, on CPU
    python benchmarks/sn_speed.py --device cuda --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gan import spectral  # noqa: E402
from gan.losses import gradient_penalty  # noqa: E402
from gan.models import Discriminator  # noqa: E402

SETTINGS = {  # name: (image_size, conv_dim, repeat_num, batch)
    "default 32px D": (32, 32, 3, 16),
    "StarGAN 128px D": (128, 64, 6, 16),
}


def build(variant: str, size: int, conv_dim: int, repeat: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    D = Discriminator(size, 5, conv_dim, repeat)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    if variant == "torch parametrizations":
        for conv in convs:
            nn.utils.parametrizations.spectral_norm(conv)
    else:
        spectral.apply_spectral_norm(D)
        if variant == "ours, one iteration per step":
            spectral.set_power_iteration_mode(D, "manual")
    return D.to(device).train()


def make_step(D: nn.Module, variant: str, real: torch.Tensor, fake: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.Adam(D.parameters(), 1e-4, betas=(0.5, 0.999))
    manual = variant == "ours, one iteration per step"

    def step() -> None:
        if manual:
            spectral.power_iteration_(D)
        out_real, _ = D(real)
        out_fake, _ = D(fake)
        loss = out_fake.mean() - out_real.mean() + 10 * gradient_penalty(lambda x: D(x)[0], real, fake)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_setting(size: int, conv_dim: int, repeat: int, batch: int, args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    variants = ["torch parametrizations", "ours, every forward", "ours, one iteration per step"]
    g = torch.Generator().manual_seed(1)
    real = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    fake = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    steps = {v: make_step(build(v, size, conv_dim, repeat, device), v, real, fake) for v in variants}
    for step in steps.values():  # warm-up: allocator, kernels, autograd caches
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[variant].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, median of {args.rounds} interleaved rounds\n")
    print("| D | variant | ms / step | vs torch parametrizations |")
    print("|---|---|---|---|")
    for setting in args.settings:
        medians = time_setting(*SETTINGS[setting], args)
        base = medians["torch parametrizations"]
        for variant, seconds in medians.items():
            print(f"| {setting} | {variant} | {1000 * seconds:.1f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
