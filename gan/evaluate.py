"""``evaluate.py`` subcommands: apply a trained generator to images (``translate``) and measure ``paired-l1``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision.utils import save_image

from gan.checkpoint import load_checkpoint
from gan.config import Config, config_from_dict
from gan.errors import DataError, UserError
from gan.models import build_generator

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description="Evaluate or apply a trained spectral-gan model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("translate", help="translate an image or a folder of images into target domains")
    t.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by train.py (e.g. last.pt)")
    t.add_argument("--input", type=Path, required=True, help="an image file or a folder of images")
    t.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="DOMAIN[,DOMAIN...]",
        help="target domain name; repeat for several outputs. Multi-label models: the listed attributes are set, "
        "the others cleared",
    )
    t.add_argument("--out", type=Path, required=True, help="output file (one input, one target) or folder")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--no-ema", action="store_true", help="use the trained G even when an EMA copy exists")

    m = sub.add_parser("paired-l1", help="paired L1 to the ground truth on the synthetic test set")
    m.add_argument("--checkpoint", type=Path, required=True)
    m.add_argument("--num-images", type=int, default=256)
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    m.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    return p


def load_generator(path: Path, device: torch.device, ema: bool = True) -> tuple[nn.Module, Config, dict[str, Any]]:
    """The generator stored in a checkpoint (its EMA copy if present and ``ema``), in eval mode."""
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"], where=str(path))
    G = build_generator(cfg.model.generator, len(state["domains"]))
    weights = state["G_ema"] if ema and state.get("G_ema") is not None else state["G"]
    G.load_state_dict(weights)
    return G.to(device).eval(), cfg, state


def _target_vector(spec: str, domains: list[str], multi_label: bool) -> torch.Tensor:
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in domains]
    if unknown or not names:
        raise UserError(f"--to {spec}: unknown domain {unknown[0] if unknown else spec!r}; known: {', '.join(domains)}")
    if not multi_label and len(names) != 1:
        raise UserError(f"--to {spec}: this model's domains are exclusive; name exactly one")
    vec = torch.zeros(len(domains))
    for name in names:
        vec[domains.index(name)] = 1.0
    return vec


def _input_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            return files
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    raise DataError(f"{path}: no such file or folder")


def _load_image(path: Path, cfg: Config) -> torch.Tensor:
    from gan.data import image_transform

    try:
        with Image.open(path) as image:
            return image_transform(cfg.data.image_size, cfg.data.crop_size)(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__})") from None


def _pick_device(name: str) -> torch.device:
    from gan.cli import pick_device

    return pick_device(name)


def translate(args: argparse.Namespace) -> int:
    device = _pick_device(args.device)
    G, cfg, state = load_generator(args.checkpoint, device, ema=not args.no_ema)
    domains, multi = list(state["domains"]), bool(state["multi_label"])
    targets = [(spec, _target_vector(spec, domains, multi)) for spec in args.to]
    files = _input_files(args.input)
    single = len(files) == 1 and len(targets) == 1 and args.out.suffix.lower() in IMAGE_SUFFIXES
    if not single:
        args.out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    for path in tqdm(files, desc="translate", unit="img", disable=len(files) < 2):
        x = _load_image(path, cfg).unsqueeze(0).to(device)
        for spec, vec in targets:
            with torch.no_grad():
                y = G(x, vec.unsqueeze(0).to(device))
            out = args.out if single else args.out / f"{path.stem}_to_{spec.replace(',', '+')}.png"
            save_image((y + 1) / 2, out)
    print(f"wrote {len(files) * len(targets)} image(s) to {args.out}")
    return 0


def paired_l1_command(args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    from gan.data import build_data
    from gan.hooks import paired_l1

    device = _pick_device(args.device)
    G, cfg, state = load_generator(args.checkpoint, device)
    data = build_data(cfg.data, train_flip=False)
    if data.paired is None:
        raise UserError(f"{args.checkpoint}: paired-l1 needs the synthetic dataset (data.source: {cfg.data.source})")
    view = SimpleNamespace(data=data, device=device, domain_vector=_domain_vector_fn(len(data.domains)))
    value = float(paired_l1(G, view, args.num_images))  # type: ignore[arg-type]
    result = {
        "paired_l1": value,
        "step": int(state["step"]),
        "num_images": min(args.num_images, len(data.paired.labels)),
    }
    print(json.dumps(result) if args.json else f"paired L1 at step {result['step']}: {value:.4f}")
    return 0


def _domain_vector_fn(num_domains: int):
    return lambda labels: nn.functional.one_hot(labels, num_domains).float()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    commands = {"translate": translate, "paired-l1": paired_l1_command}
    return commands[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
