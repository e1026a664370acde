"""Training speed against the official StarGAN on the identical configuration, side by side in one process tree.

Both train on the same folder of 64 px PNGs (3 domains, written here), G 32 channels / 3 residual blocks, D 32
channels / 5 stride-2 convs, batch 8, n_critic 5, gradient penalty 10, no evaluation, sampling or checkpoints inside
the timed window, data loading in the main process. Steady-state time per iteration comes from each side's own
progress records: StarGAN's "Iteration [i/N]" lines (timestamped as they arrive: its own clock has one-second
resolution) and our ``scalars.jsonl`` times, between iterations ``--from`` and ``--iters``. Variants run in
alternating order per round (the machine is shared and noisy); the table shows each variant's median over rounds and
its speed relative to StarGAN's median.

    python benchmarks/vs_stargan.py --stargan-dir ../shared/anchors/stargan
    python benchmarks/vs_stargan.py --stargan-dir PATH --rounds 3 --variants default,bf16
    python benchmarks/vs_stargan.py --stargan-dir PATH --device cuda --full-size   # 128 px, 64 ch, 6+6, batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DOMAINS = ("red", "green", "blue")

# Our variants: --set overrides on top of the shared configuration.
VARIANTS: dict[str, list[str]] = {
    "default": [],  # spectrally normalised D, fp32
    "sn_off": ["model.discriminator.spectral_norm.enabled=false"],
    "bf16": ["train.precision=bf16"],
    "channels_last": ["train.channels_last=true"],
    "compile": ["train.compile=true"],
    "bf16_compile": ["train.precision=bf16", "train.compile=true"],
    "torchrun2": [],  # the default config, as 2 processes of 1 thread each (DDP over gloo; same global batch)
    "torchrun2_bf16": ["train.precision=bf16"],
}
PROCESSES = {"torchrun2": 2, "torchrun2_bf16": 2}  # variants started with torchrun (others: one process)


def write_images(root: Path, per_domain: int, size: int) -> Path:
    """``root/<domain>/*.png``: noise images tinted per domain (content does not matter for speed)."""
    rng = np.random.default_rng(0)
    for d, name in enumerate(DOMAINS):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_domain):
            image = rng.integers(0, 160, (size, size, 3), dtype=np.uint8)
            image[..., d] += 95
            Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


def shape(full: bool) -> dict[str, int]:
    if full:  # StarGAN's published size
        return {"size": 128, "g_dim": 64, "d_dim": 64, "g_blocks": 6, "d_blocks": 6, "batch": 16}
    return {"size": 64, "g_dim": 32, "d_dim": 32, "g_blocks": 3, "d_blocks": 5, "batch": 8}


def steady_ms(points: dict[int, float], start: int, end: int, where: str) -> float:
    if start not in points or end not in points:
        raise SystemExit(f"{where}: no progress record at iterations {start} and {end} (got {sorted(points)[:6]}...)")
    return 1000 * (points[end] - points[start]) / (end - start)


def run_stargan(stargan: Path, data: Path, out: Path, s: dict[str, int], iters: int, start: int, device: str) -> float:
    """ms/iteration of the official StarGAN between iterations ``start`` and ``iters``."""
    cmd = [
        sys.executable, "-u", "main.py", "--mode", "train", "--dataset", "RaFD", "--c_dim", str(len(DOMAINS)),
        "--image_size", str(s["size"]), "--rafd_crop_size", str(s["size"]),
        "--g_conv_dim", str(s["g_dim"]), "--d_conv_dim", str(s["d_dim"]),
        "--g_repeat_num", str(s["g_blocks"]), "--d_repeat_num", str(s["d_blocks"]),
        "--batch_size", str(s["batch"]), "--num_iters", str(iters), "--num_iters_decay", "0", "--log_step", "10",
        "--use_tensorboard", "False", "--num_workers", "0", "--rafd_image_dir", str(data),
        "--log_dir", str(out / "logs"), "--model_save_dir", str(out / "models"), "--sample_dir", str(out / "samples"),
        "--result_dir", str(out / "results"), "--sample_step", "100000", "--model_save_step", "100000",
    ]  # fmt: skip
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "") if device == "cuda" else "")
    points: dict[int, float] = {}
    with subprocess.Popen(cmd, cwd=stargan, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        assert p.stdout is not None
        tail: list[str] = []
        for line in p.stdout:
            now = time.perf_counter()
            tail = [*tail[-20:], line]
            if m := re.search(r"Iteration \[(\d+)/\d+\]", line):
                points[int(m.group(1))] = now
    if p.returncode:
        raise SystemExit(f"StarGAN failed (exit {p.returncode}):\n{''.join(tail)}")
    return steady_ms(points, start, iters, "StarGAN")


def run_ours(
    data: Path, out: Path, s: dict[str, int], iters: int, start: int, device: str, extra: list[str], processes: int = 1
) -> float:
    """ms/iteration of our trainer between iterations ``start`` and ``iters`` (from scalars.jsonl's times)."""
    sets = [
        "data.source=folder", f"data.folder.root={data}", "data.folder.split=ratio", "data.folder.test_ratio=0.1",
        f"data.image_size={s['size']}", f"data.crop_size={s['size']}", "data.num_workers=0",
        f"model.generator.conv_dim={s['g_dim']}", f"model.generator.repeat_num={s['g_blocks']}",
        f"model.discriminator.conv_dim={s['d_dim']}", f"model.discriminator.repeat_num={s['d_blocks']}",
        f"train.batch_size={s['batch']}", "train.n_critic=5", f"train.steps={iters}", "train.lr_decay_steps=0",
        f"train.device={device}", "train.progress=false",
        "hooks.scalars.every=10", "hooks.images.every=0", "hooks.sigma.every=0", "hooks.lipschitz.every=0",
        "hooks.norms.every=0", "hooks.paired_l1.every=0", "hooks.fid.every=0", "hooks.checkpoint.every=0",
        "hooks.stability.every=0", *extra,
    ]  # fmt: skip
    launcher, env = [sys.executable], dict(os.environ)
    if processes > 1:  # the cores split between the processes, as a user of torchrun on this machine would
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or processes) // processes))
    cmd = [
        *launcher,
        str(REPO / "train.py"),
        "--config",
        str(REPO / "configs" / "base.yaml"),
        "--run-dir",
        str(out),
    ]
    for item in sets:
        cmd += ["--set", item]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"our trainer failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    points = {}
    for line in (out / "scalars.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "perf/it_per_s" in row:
            points[int(row["step"])] = float(row["time"])
    return steady_ms(points, start, iters, "ours")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stargan-dir", type=Path, required=True, help="the official StarGAN (its main.py)")
    parser.add_argument("--iters", type=int, default=160, help="iterations per run (timed from --from to here)")
    parser.add_argument("--from", dest="start", type=int, default=40, help="first timed iteration (warm-up before)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"ours: {', '.join(VARIANTS)}")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--full-size", action="store_true", help="StarGAN's published size (128 px, 64 ch, 6+6)")
    parser.add_argument("--images", type=int, default=64, help="images per domain")
    args = parser.parse_args()
    if not (args.stargan_dir / "main.py").is_file():
        raise SystemExit(f"--stargan-dir {args.stargan_dir}: no main.py there")
    if args.start % 10 or args.iters % 10 or not 0 < args.start < args.iters:
        raise SystemExit("--from and --iters: multiples of 10 (both sides log every 10 iterations), --from < --iters")
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    s = shape(args.full_size)
    names = ["stargan", *variants]
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_images(Path(tmp) / "data", args.images, s["size"])
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else list(reversed(names)):
                out = Path(tmp) / f"r{r}-{name}"
                if name == "stargan":
                    ms = run_stargan(args.stargan_dir.resolve(), data, out, s, args.iters, args.start, args.device)
                else:
                    extra, processes = VARIANTS[name], PROCESSES.get(name, 1)
                    ms = run_ours(data, out, s, args.iters, args.start, args.device, extra, processes)
                times[name].append(ms)
                print(f"# round {r}: {name} {ms:.1f} ms/it", file=sys.stderr, flush=True)
    base = statistics.median(times["stargan"])
    size = f"{s['size']} px, G {s['g_dim']}/{s['g_blocks']}, D {s['d_dim']}/{s['d_blocks']}, batch {s['batch']}"
    print(f"\n{size}, n_critic 5, {args.device}, iterations {args.start}-{args.iters}, {args.rounds} round(s)\n")
    print("| variant | ms/it (median) | per round | speed vs StarGAN |")
    print("|---|---|---|---|")
    for name in names:
        per = ", ".join(f"{t:.0f}" for t in times[name])
        print(
            f"| {name} | {statistics.median(times[name]):.1f} | {per} | {base / statistics.median(times[name]):.2f}x |"
        )


if __name__ == "__main__":
    main()
