"""Sweep throughput with 1 and with 2 worker processes on the same plan, measured side by side in one run.

The plan is configs/sweeps/example.yaml shortened further (``--steps``); each round runs it twice into fresh study
folders, once with ``--workers 1`` (all cores for one run) and once with ``--workers 2`` (half the cores each),
alternating which goes first, and prints runs per hour of each and their ratio.

    python benchmarks/sweep_throughput.py                 # 8 runs of 150 steps, 1 round
    python benchmarks/sweep_throughput.py --steps 300 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gan.sweep import load_sweep, run_sweep, threads_per_worker  # noqa: E402


def one(study: Path, workers: int, steps: int) -> float:
    """Seconds for the whole plan with ``workers`` processes."""
    extra = [f"train.steps={steps}", f"train.lr_decay_steps={steps // 2}", "hooks.lipschitz.every=0"]
    sweep = load_sweep(REPO / "configs" / "sweeps" / "example.yaml", study, extra)
    start = time.perf_counter()
    results = run_sweep(sweep, workers, progress=False)
    seconds = time.perf_counter() - start
    bad = {k: v for k, v in results.items() if v != "completed"}
    if bad:
        raise SystemExit(f"runs did not complete: {bad}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    runs = len(load_sweep(REPO / "configs" / "sweeps" / "example.yaml").runs)
    with tempfile.TemporaryDirectory() as root:
        for r in range(args.rounds):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                seconds = one(Path(root) / f"r{r}-w{workers}", workers, args.steps)
                times[workers].append(seconds)
                print(f"# round {r}: {workers} worker(s), {seconds:.1f} s", file=sys.stderr, flush=True)
    rate = {w: 3600 * runs / statistics.median(t) for w, t in times.items()}
    print(f"\n{runs} runs of {args.steps} steps each, {args.rounds} round(s)\n")
    print("| workers | threads each | median seconds | runs per hour |")
    print("|---|---|---|---|")
    for w in (1, 2):
        print(f"| {w} | {threads_per_worker(w)} | {statistics.median(times[w]):.1f} | {rate[w]:.0f} |")
    print(f"\n2 workers vs 1: {rate[2] / rate[1]:.2f}x runs per hour")


if __name__ == "__main__":
    main()
