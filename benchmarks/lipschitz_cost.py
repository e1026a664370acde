"""Cost of the lipschitz hook as a share of training time, at its configured interval, measured in one run.

Trains the given config (default: the embedded default) for a number of steps while timing the steps, and times the
hook's measurements on the same trainer in between (warm-started, as in a run). Prints the time of one training
step, of one hook call, and the share ``hook / (every * step)`` (target: <= 3 %).

    python benchmarks/lipschitz_cost.py [--config configs/default.yaml] [--steps 300] [--calls 5]
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

from gan.build import build_data, build_trainer  # noqa: E402
from gan.config import load_config  # noqa: E402
from gan.hooks import LipschitzHook  # noqa: E402


class _NoWriter:
    def scalars(self, values: dict, step: int) -> None:
        for value in values.values():
            float(value)  # the real writer converts every value: include that sync in the cost

    def custom_scalars(self, layout: dict) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    cfg = load_config([args.config], args.set)
    device = torch.device("cpu" if cfg.train.device == "auto" else cfg.train.device)
    trainer = build_trainer(cfg, build_data(cfg.data), device)
    h = cfg.hooks.lipschitz
    hook = LipschitzHook(
        _NoWriter(),  # type: ignore[arg-type]  # the two methods of RunWriter the hook calls
        h.every,
        h.num_images,
        h.jacobian,
        cfg.data.image_size,
        cfg.train.seed,
    )
    hook.on_fit_start(trainer)  # the first call (step 0) starts the power iterations cold
    loader = iter(trainer.make_loader())
    step_times, hook_times = [], []
    per_block = max(1, args.steps // args.calls)
    for _ in range(args.calls):
        start = time.perf_counter()
        for _ in range(per_block):
            trainer.train_step(next(loader))
        step_times.append((time.perf_counter() - start) / per_block)
        start = time.perf_counter()
        hook.after_step(trainer)
        hook_times.append(time.perf_counter() - start)
    step, call = statistics.median(step_times), statistics.median(hook_times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, config {args.config.name}")
    print(f"one training step: {1000 * step:.1f} ms (median over {args.calls} blocks of {per_block})")
    print(f"one lipschitz hook call (warm): {1000 * call:.1f} ms (median of {args.calls}; jacobian={h.jacobian})")
    print(f"share of training time at every={h.every}: {100 * call / (h.every * step + call):.2f} %")


if __name__ == "__main__":
    main()
