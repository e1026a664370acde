"""Which norm layer for the generator? Train the default setting once per layer and seed, side by side in one run.

For each `configs/ablations/generator_norm/<name>.yaml` (layered over configs/default.yaml), trains for the same number
of steps from the same seeds on the same machine and prints a Markdown table: paired L1 on the synthetic domains
(all held-out images, every target domain), seconds per 100 training steps, and that time as a ratio to `instance`
(StarGAN's choice) measured in the same run.

    python benchmarks/norm_ablation.py --steps 1500 --seeds 0 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gan.build import build_data, build_trainer, load_run_config  # noqa: E402
from gan.metrics.evaluation import paired_scores  # noqa: E402

ABLATIONS = REPO / "configs" / "ablations" / "generator_norm"
ORDER = ["instance", "batch_instance", "batch", "layer", "group", "batch_renorm", "switchable", "none"]


def run_one(name: str, seed: int, steps: int, base: Path) -> tuple[float, float]:
    """Train one layer for ``steps`` steps; returns (paired L1 at the end, seconds per 100 steps)."""
    overrides = [f"train.steps={steps}", f"train.lr_decay_steps={steps // 2}", f"train.seed={seed}"]
    cfg = load_run_config([base, ABLATIONS / f"{name}.yaml"], overrides)
    data = build_data(cfg.data)
    trainer = build_trainer(cfg, data, torch.device("cpu"))
    trainer.G.train()
    trainer.D.train()
    start = time.perf_counter()
    for batch in trainer.make_loader():
        trainer.train_step(batch)
    seconds = time.perf_counter() - start
    value, _ = paired_scores(trainer.sample_generator(), data.paired, trainer.device, len(data.paired.labels))
    return value, 100 * seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--norms", nargs="+", default=ORDER, choices=ORDER)
    parser.add_argument("--base", type=Path, default=REPO / "configs" / "default.yaml")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}
    for name in args.norms:
        for seed in args.seeds:
            results.setdefault(name, []).append(run_one(name, seed, args.steps, args.base))
            l1, sec = results[name][-1]
            print(f"# {name} seed {seed}: paired L1 {l1:.4f}, {sec:.2f} s / 100 steps", file=sys.stderr, flush=True)
    baseline = statistics.mean(s for _, s in results.get("instance", results[args.norms[0]]))
    print(f"\n{args.steps} steps, seeds {args.seeds}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| G norm | paired L1 (mean over seeds) | per seed | s / 100 steps | time vs instance |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        l1s, secs = [r[0] for r in rows], [r[1] for r in rows]
        per_seed = ", ".join(f"{v:.4f}" for v in l1s)
        sec = statistics.mean(secs)
        print(f"| `{name}` | {statistics.mean(l1s):.4f} | {per_seed} | {sec:.2f} | {sec / baseline:.2f}x |")


if __name__ == "__main__":
    main()
