"""Where one training iteration's time goes: torch.profiler over our trainer on vs_stargan.py's configuration.

The configuration is vs_stargan.py's (64 px, 3 domains, G 32 channels / 3 blocks, D 32 channels / 5 convs, batch 8,
n_critic 5, GP 10) on the built-in synthetic data, so that no image decoding is measured. After ``--warmup``
iterations, ``--iters`` iterations run under the profiler; operators are grouped into convolution (forward and
backward), normalization, spectral norm's vector work (mv, dot, normalize), the optimizer (Adam's foreach kernels),
element-wise and other operators, and the rest of the wall time (Python, autograd bookkeeping, waiting) is shown as
"outside operators". Shares are of the profiled wall time; operators overlap nothing on the CPU, so they add up.

    python benchmarks/profile_step.py                       # the default config (SN on, fp32)
    python benchmarks/profile_step.py --set train.precision=bf16 --set model.discriminator.spectral_norm.enabled=false
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gan.build import build_data, build_trainer, load_run_config  # noqa: E402

SETTINGS = [
    "data.source=synthetic", "data.image_size=64", "data.synthetic.images_per_domain=64",
    "model.generator.conv_dim=32", "model.generator.repeat_num=3",
    "model.discriminator.conv_dim=32", "model.discriminator.repeat_num=5",
    "train.batch_size=8", "train.n_critic=5", "train.steps=1000", "train.lr_decay_steps=0", "train.device=cpu",
]  # fmt: skip

# Operator name fragments -> category (first match wins; matched against the lower-case name).
CATEGORIES = [
    ("convolution", ("conv",)),
    ("normalization", ("norm", "instance", "var_mean", "batch_norm")),
    ("spectral norm vectors", ("aten::mv", "aten::dot", "addmv", "linalg_vector_norm", "clamp_min")),
    ("optimizer", ("_foreach", "adam", "lerp")),
    ("element-wise", ("add", "mul", "div", "sub", "neg", "leaky", "tanh", "pow", "sqrt", "where", "fill", "copy")),
]


def category(name: str) -> str:
    lower = name.lower()
    for label, fragments in CATEGORIES:
        if any(fragment in lower for fragment in fragments):
            return label
    return "other operators"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--top", type=int, default=12, help="operators listed individually")
    args = parser.parse_args()
    cfg = load_run_config([REPO / "configs" / "base.yaml"], [*SETTINGS, *args.set])
    trainer = build_trainer(cfg, build_data(cfg.data), torch.device("cpu"))
    batches = iter(trainer.make_loader())
    for _ in range(args.warmup):
        trainer.train_step(next(batches))
    loaded = [next(batches) for _ in range(args.iters)]  # loading stays outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for batch in loaded:
            trainer.train_step(batch)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        totals[category(event.key)] += event.self_cpu_time_total / 1e6
    inside = sum(totals.values())
    ms = 1000 * wall / args.iters
    print(f"{args.iters} iterations: {ms:.1f} ms/it under the profiler ({torch.get_num_threads()} threads)")
    print("| where | ms/it | share of wall time |")
    print("|---|---|---|")
    for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {1000 * seconds / args.iters:.1f} | {100 * seconds / wall:.1f} % |")
    outside = max(0.0, wall - inside)
    share = 100 * outside / wall
    print(f"| outside operators (Python, autograd) | {1000 * outside / args.iters:.1f} | {share:.1f} % |")
    print()
    print("| operator | calls/it | ms/it | category |")
    print("|---|---|---|---|")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        ms = event.self_cpu_time_total / 1e3 / args.iters
        print(f"| {event.key} | {event.count / args.iters:.0f} | {ms:.2f} | {category(event.key)} |")


if __name__ == "__main__":
    main()
