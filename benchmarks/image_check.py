"""Cost of ``data.check_images`` (and of ``data.skip_bad_images``): the full decode of every image of a folder or
CelebA dataset when the data is built, against the baseline of listing the files and against PIL's ``verify()``
(a header and checksum check that lets truncated and 16-bit/float files through), measured in the same run.

Writes ``--count`` images of each kind into a temporary folder and prints, per kind, seconds and microseconds per
image for: listing only, verify(), and gan.data's check (best of ``--runs``), and the ratio check / listing.

    python benchmarks/image_check.py [--count 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gan.data.base import list_images, unreadable  # noqa: E402

KINDS = [((64, 64), ".png"), ((128, 128), ".png"), ((178, 218), ".jpg")]  # 178x218: CelebA's aligned JPEGs


def make(folder: Path, count: int, size: tuple[int, int], suffix: str) -> None:
    """``count`` gradient-plus-noise images (compress like photographs rather than like flat colour)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    for i in range(count):
        base = np.stack([(xx * 255 // size[0] + i) % 256, (yy * 255 // size[1]) % 256, np.full_like(xx, i % 256)], -1)
        noisy = np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:05d}{suffix}")


def verify(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()


def check(path: Path) -> None:
    problem = unreadable(path)
    assert problem is None, problem


def best_of(work: Callable[[], None], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for size, suffix in KINDS:
            folder = Path(tmp, f"{suffix[1:]}{size[0]}")
            make(folder, args.count, size, suffix)
            listing = best_of(lambda f=folder: list_images(f), args.runs)
            paths = list_images(folder)
            verified = best_of(lambda p=paths: [verify(x) for x in p], args.runs)
            checked = best_of(lambda p=paths: [check(x) for x in p], args.runs)
            per = 1e6 / len(paths)
            print(
                f"{len(paths)} {size[0]}x{size[1]} {suffix}: listing {listing:.3f} s ({listing * per:.0f} us/image), "
                f"verify() {verified:.3f} s ({verified * per:.0f} us/image), check {checked:.3f} s "
                f"({checked * per:.0f} us/image); check / verify {checked / verified:.1f}x"
            )


if __name__ == "__main__":
    main()
