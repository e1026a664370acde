"""FID of the same two image folders with ours and with pytorch-fid, in one run on one device: values and time.

Both read the same PNG files and the same weights file (the real one if you pass --weights or have it in the torch
hub cache with --real-weights; otherwise seeded random weights in the standard layout, which cost exactly as much to
run). pytorch-fid is called as its CLI runs it (batch 50, 2048-d, DataLoader workers min(8, CPUs)); ours is
``evaluate.py fid`` (BatchNorm folded into the convolutions, channels-last, float64 statistics, eigenvalue-based
trace of the square root). The order alternates per round so machine drift hits both; prints medians and the ratio
(target: ours >= 2x faster at an equal value, |relative difference| <= 1e-6).

    python benchmarks/fid_speed.py                           # CPU, 2 x 100 images of 32 px
    python benchmarks/fid_speed.py --images 1000 --size 128 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gan.metrics.features import InceptionExtractor, folder_features  # noqa: E402
from gan.metrics.fid import feature_statistics, frechet_distance  # noqa: E402
from gan.metrics.inception import WEIGHTS_ALIASES, random_inception_state_dict  # noqa: E402


def write_folder(folder: Path, count: int, size: int, seed: int, shift: float) -> Path:
    """Smooth random colour fields plus noise, as PNG (lossless: identical pixels for both readers)."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True)
    cells = max(size // 8, 1)
    for i in range(count):
        coarse = rng.uniform(0, 1, (cells, cells, 3)) + shift
        up = np.kron(coarse, np.ones((size // cells, size // cells, 1)))[:size, :size]
        image = up * 180 + rng.normal(0, 20, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def ours(a: Path, b: Path, device: str, weights: Path, batch: int) -> float:
    extractor = InceptionExtractor(weights, "pytorch_fid", device, fast=True)
    stats = [feature_statistics(folder_features(extractor, p, batch)) for p in (a, b)]
    return frechet_distance(*stats[0], *stats[1])


def reference(a: Path, b: Path, device: str) -> float:
    import inspect

    import scipy.linalg
    from pytorch_fid import fid_score
    from pytorch_fid.fid_score import calculate_fid_given_paths

    if "disp" not in inspect.signature(scipy.linalg.sqrtm).parameters:  # scipy >= 1.18 removed it; pytorch-fid uses it
        original = scipy.linalg.sqrtm
        fid_score.linalg.sqrtm = lambda m, disp=True: original(m) if disp else (original(m), None)

    workers = min(8, len(os.sched_getaffinity(0)))  # what `python -m pytorch_fid` uses
    # TF32 off as in ours: with it (torch's default for cuDNN) pytorch-fid's GPU features move by ~7e-4 relative
    # (H100, measured), and the values would no longer be comparable.
    tf32, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
    try:
        return float(calculate_fid_given_paths([str(a), str(b)], 50, device, 2048, num_workers=workers))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100, help="images per folder")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=50, help="our batch size")
    p.add_argument("--weights", type=Path, help="the real pt_inception-2015-12-05-6726825d.pth (default: random)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hub = root / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        weights = hub / WEIGHTS_ALIASES[0]
        if args.weights:
            os.symlink(args.weights.resolve(), weights)
        else:
            torch.save(random_inception_state_dict(2024), weights)
        torch.hub.set_dir(str(root / "hub"))  # pytorch-fid reads the same file from this hub cache, offline
        a = write_folder(root / "a", args.images, args.size, 1, 0.0)
        b = write_folder(root / "b", args.images, args.size, 2, 0.3)
        times: dict[str, list[float]] = {"ours": [], "pytorch-fid": []}
        values: dict[str, float] = {}
        for r in range(args.rounds):
            order = ["ours", "pytorch-fid"] if r % 2 == 0 else ["pytorch-fid", "ours"]
            for name in order:
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                values[name] = (
                    ours(a, b, args.device, weights, args.batch) if name == "ours" else reference(a, b, args.device)
                )
                times[name].append(time.perf_counter() - t)
                print(f"round {r} {name:<12} FID {values[name]:.10f}  {times[name][-1]:7.2f} s", flush=True)

    t_ours, t_ref = statistics.median(times["ours"]), statistics.median(times["pytorch-fid"])
    n = 2 * args.images
    rel = abs(values["ours"] - values["pytorch-fid"]) / abs(values["pytorch-fid"])
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"\n{n} images of {args.size} px on {device}, torch {torch.__version__}, "
          f"{'real' if args.weights else 'random'} weights")  # fmt: skip
    print(f"pytorch-fid {t_ref:7.2f} s ({n / t_ref:7.1f} img/s)   FID {values['pytorch-fid']:.10f}")
    print(f"ours        {t_ours:7.2f} s ({n / t_ours:7.1f} img/s)   FID {values['ours']:.10f}")
    print(f"speed-up {t_ref / t_ours:.2f}x   relative difference {rel:.2e}")


if __name__ == "__main__":
    main()
