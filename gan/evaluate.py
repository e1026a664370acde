"""``evaluate.py`` subcommands: ``fid``, ``kid`` (two image folders, or a checkpoint's translations per target
domain), ``accuracy`` and ``train-classifier`` (domain accuracy), ``translate`` (apply a model to your images) and
``paired-l1`` (synthetic ground truth)."""

from __future__ import annotations

import argparse
import json
import logging
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

log = logging.getLogger(__name__)

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

    for name, what, inputs in (
        ("fid", "Frechet Inception Distance", "two image folders (or pytorch-fid .npz statistics)"),
        ("kid", "Kernel Inception Distance", "two image folders"),
    ):
        f = sub.add_parser(
            name,
            help=f"{what}: {inputs}, or a checkpoint's translations per target domain",
            description=f"{what} with the FID Inception network (weights never downloaded). Either {inputs}, or "
            "--checkpoint: held-out images translated into each target domain, compared with that domain's real "
            "images (per domain and mean; also KID, domain accuracy and paired scores).",
        )
        f.add_argument("paths", nargs="*", type=Path, metavar="PATH", help=inputs)
        _checkpoint_options(f)
        _inception_options(f)
        if name == "fid":
            f.add_argument("--force", action="store_true", help="with --save-stats: replace an existing file")
            f.add_argument(
                "--save-stats",
                action="store_true",
                help="PATH PATH = folder out.npz: write the folder's "
                "statistics in pytorch-fid's .npz format instead of computing a distance",
            )
        else:
            f.add_argument("--subsets", type=int, default=None, help="random subsets (default 100, torch-fidelity's)")
            f.add_argument("--subset-size", type=int, default=None, help="images per subset (default 1000, capped)")

    a = sub.add_parser("accuracy", help="share of a checkpoint's translations classified as their target domain")
    _checkpoint_options(a, required=True)
    a.add_argument("--classifier", type=Path, help="a classifier file (default: <run>/classifier.pt)")

    c = sub.add_parser("train-classifier", help="train the domain classifier on a run's real training images")
    c.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint of the run (its config and data)")
    c.add_argument("--out", type=Path, help="where to save it (default: <run>/classifier.pt)")
    c.add_argument("--steps", type=int, help="training steps (default: metrics.classifier.steps of the run)")
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    c.add_argument("--json", action="store_true", help="print a JSON object instead of text")

    m = sub.add_parser("paired-l1", help="paired L1 and PSNR to the ground truth on the synthetic test set")
    m.add_argument("--checkpoint", type=Path, required=True)
    m.add_argument("--num-images", type=int, default=256)
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    m.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    return p


def _checkpoint_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--checkpoint", type=Path, required=required, help="a checkpoint written by train.py")
    p.add_argument("--num-images", type=int, help="translations per target domain (default: hooks.fid.num_images)")
    p.add_argument("--no-ema", action="store_true", help="use the trained G even when an EMA copy exists")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def _inception_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth (default: torch hub cache)")
    p.add_argument("--protocol", choices=["pytorch_fid", "tf1"], help="preprocessing (default pytorch_fid)")
    p.add_argument("--batch-size", type=int, help="images per Inception forward (default 50)")
    p.add_argument("--exact", action="store_true", help="unfused network: features bitwise equal to pytorch-fid's")
    p.add_argument("--stats-cache", help="folder of cached real-image statistics (default ~/.cache/spectral-gan)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached real-image statistics")


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
    from gan.data import build_data
    from gan.metrics.evaluation import paired_scores

    device = _pick_device(args.device)
    G, cfg, state = load_generator(args.checkpoint, device)
    data = build_data(cfg.data, train_flip=False)
    if data.paired is None:
        raise UserError(f"{args.checkpoint}: paired-l1 needs the synthetic dataset (data.source: {cfg.data.source})")
    value, psnr = paired_scores(G, _domain_vector_fn(len(data.domains)), data.paired, device, args.num_images)
    result = {
        "paired_l1": value,
        "paired_psnr": psnr,
        "step": int(state["step"]),
        "num_images": min(args.num_images, len(data.paired.labels)),
    }
    text = f"paired L1 at step {result['step']}: {value:.4f} (PSNR {psnr:.2f} dB)"
    print(json.dumps(result) if args.json else text)
    return 0


# ---------------------------------------------------------------------------------------------- fid, kid, accuracy


def _with_metric_options(cfg: Config, args: argparse.Namespace) -> Config:
    """``cfg`` with the command line's metric options applied (validated like config values)."""
    from dataclasses import replace

    changes: dict[str, Any] = {}
    for option, key in (
        ("inception_weights", "inception_weights"),
        ("protocol", "protocol"),
        ("stats_cache", "stats_cache"),
        ("subsets", "kid_subsets"),
        ("subset_size", "kid_subset_size"),
        ("batch_size", "batch_size"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            if isinstance(value, int) and value < 1:
                raise UserError(f"--{option.replace('_', '-')}: must be at least 1, got {value}")
            changes[key] = value
    if getattr(args, "exact", False):
        changes["fast_inception"] = False
    return replace(cfg, metrics=replace(cfg.metrics, **changes))


def run_dir_of(checkpoint: Path) -> Path:
    """``runs/x`` for ``runs/x/checkpoints/last.pt``; the checkpoint's own folder otherwise."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _print_result(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    print(json.dumps(result, indent=2) if args.json else text)


def fid_command(args: argparse.Namespace) -> int:
    return _distance_command(args, "fid")


def kid_command(args: argparse.Namespace) -> int:
    return _distance_command(args, "kid")


def _distance_command(args: argparse.Namespace, metric: str) -> int:
    if args.checkpoint is not None:
        if args.paths:
            raise UserError(f"{metric}: give two paths or --checkpoint, not both")
        return _checkpoint_command(args, metric)
    if len(args.paths) != 2:
        raise UserError(f"{metric}: give two image folders (for fid also .npz statistics), or --checkpoint")
    from gan.metrics.features import InceptionExtractor

    cfg = _with_metric_options(Config(), args)
    m = cfg.metrics
    extractor = InceptionExtractor(m.inception_weights or None, m.protocol, _pick_device(args.device), m.fast_inception)
    if metric == "fid" and args.save_stats:
        return _save_stats(args, extractor, m.batch_size)
    if metric == "kid":
        return _folder_kid(args, extractor, m)
    stats = [_path_statistics(path, extractor, m.batch_size) for path in args.paths]
    from gan.metrics.fid import frechet_distance

    value = frechet_distance(*stats[0][:2], *stats[1][:2])
    result = {"fid": value, "paths": [str(p) for p in args.paths], "num_images": [s[2] for s in stats]}
    result.update(extractor.info)
    _print_result(
        args, result, f"FID ({_describe(extractor.info)}, {stats[0][2]} vs {stats[1][2]} images): {value:.6f}"
    )
    return 0


def _describe(info: dict[str, Any]) -> str:
    weights = "" if info.get("official_weights", True) else ", UNOFFICIAL weights " + str(info.get("weights_sha256"))
    return f"{info['extractor']}, protocol {info['protocol']}{weights}"


def _path_statistics(path: Path, extractor: Any, batch_size: int) -> tuple[Any, Any, int | None]:
    """(mu, sigma, number of images) of a folder, or of a pytorch-fid .npz file (its image count is unknown)."""
    from gan.metrics.features import folder_features
    from gan.metrics.fid import feature_statistics, load_stats

    if path.suffix.lower() == ".npz":
        mu, sigma, meta = load_stats(path)
        for key in ("protocol", "weights_sha256"):  # recorded in files we wrote; pytorch-fid's files have none
            recorded, ours = meta.get(key), extractor.info.get(key)
            if recorded is not None and recorded != ours:
                raise DataError(f"{path}: statistics of {key} {recorded}, but this run uses {ours}")
        if mu.shape[0] != extractor.info["dims"]:
            raise DataError(f"{path}: {mu.shape[0]}-d statistics, but the FID features are {extractor.info['dims']}-d")
        return mu, sigma, meta.get("count")
    features = folder_features(extractor, path, batch_size, progress=True)
    _need_two(path, len(features))
    return (*feature_statistics(features), len(features))


def _need_two(path: Path, count: int) -> None:
    if count < 2:
        raise DataError(f"{path}: {count} image; FID and KID need at least 2")


def _save_stats(args: argparse.Namespace, extractor: Any, batch_size: int) -> int:
    from gan.metrics.features import folder_features
    from gan.metrics.fid import feature_statistics, save_stats

    folder, out = args.paths
    if out.suffix.lower() != ".npz":
        raise UserError(f"{out}: --save-stats writes a .npz file; give FOLDER OUT.npz")
    if out.exists() and not args.force:
        raise UserError(f"{out}: exists; pass --force to replace it")
    features = folder_features(extractor, folder, batch_size, progress=True)
    _need_two(folder, len(features))
    meta = {k: v for k, v in extractor.info.items() if isinstance(v, (str, int, float))}
    save_stats(out, *feature_statistics(features), meta={**meta, "count": len(features), "source": str(folder)})
    _print_result(
        args,
        {"stats": str(out), "num_images": len(features), **extractor.info},
        f"wrote statistics of {len(features)} images ({_describe(extractor.info)}) to {out}",
    )
    return 0


def _folder_kid(args: argparse.Namespace, extractor: Any, m: Any) -> int:
    from gan.metrics.features import folder_features
    from gan.metrics.kid import kernel_inception_distance

    if any(p.suffix.lower() == ".npz" for p in args.paths):
        raise UserError("kid: needs the images (features), not .npz statistics")
    f1, f2 = (folder_features(extractor, p, m.batch_size, progress=True) for p in args.paths)
    for path, features in zip(args.paths, (f1, f2)):
        _need_two(path, len(features))
    size = min(m.kid_subset_size, len(f1), len(f2))
    if size < m.kid_subset_size:
        log.warning("kid: subset size %d capped at the %d images available", m.kid_subset_size, size)
    mean, std = kernel_inception_distance(f1, f2, subsets=m.kid_subsets, subset_size=size)
    result = {
        "kid_mean": mean,
        "kid_std": std,
        "subsets": m.kid_subsets,
        "subset_size": size,
        "paths": [str(p) for p in args.paths],
        "num_images": [len(f1), len(f2)],
        **extractor.info,
    }
    _print_result(
        args,
        result,
        f"KID ({_describe(extractor.info)}, {len(f1)} vs {len(f2)} images, "
        f"{m.kid_subsets} subsets of {size}): {mean:.6g} +- {std:.3g}",
    )
    return 0


def _checkpoint_command(args: argparse.Namespace, metric: str) -> int:
    """fid / kid / accuracy of a checkpoint's translations, per target domain (see gan.metrics.evaluation)."""
    from gan.data import build_data
    from gan.metrics.evaluation import RealFeatures, build_extractor, evaluate_translations, stats_cache_for

    device = _pick_device(args.device)
    G, cfg, state = load_generator(args.checkpoint, device, ema=not args.no_ema)
    cfg = _with_metric_options(cfg, args)
    data = build_data(cfg.data, train_flip=False)
    if list(data.domains) != list(state["domains"]):
        raise DataError(f"{args.checkpoint}: trained on domains {state['domains']}, the data now has {data.domains}")
    num_images = cfg.hooks.fid.num_images if args.num_images is None else args.num_images
    if num_images < 2:
        raise UserError(f"--num-images: FID needs at least 2 images per domain, got {num_images}")
    classifier = _run_classifier(args, data, device, required=metric == "accuracy")
    extractor = reals = None
    if metric != "accuracy":
        extractor = build_extractor("inception", cfg, device, None)
        cache = None if args.no_cache else stats_cache_for(cfg, extractor)
        reals = RealFeatures.for_config(data, extractor, cfg, num_images, cache, progress=True)
    m = cfg.metrics
    scores = evaluate_translations(
        G,
        _domain_vector_fn(len(data.domains), data.multi_label),
        data,
        extractor,
        reals,
        device,
        num_images,
        classifier,
        m.kid_subsets,
        m.kid_subset_size,
        m.batch_size,
        progress=True,
    )
    result = {"checkpoint": str(args.checkpoint), "step": int(state["step"]), **scores.to_dict()}
    _print_result(args, result, _scores_text(scores, metric, int(state["step"])))
    return 0


def _run_classifier(args: argparse.Namespace, data: Any, device: torch.device, required: bool) -> nn.Module | None:
    """The domain classifier (``--classifier`` or ``<run>/classifier.pt``); optional except for ``accuracy``."""
    from gan.metrics.classifier import classifier_path, load_classifier
    from gan.metrics.evaluation import check_classifier

    path = getattr(args, "classifier", None) or classifier_path(run_dir_of(args.checkpoint))
    if not path.is_file() and not required:
        log.info("no domain classifier at %s: domain accuracy not measured (evaluate.py train-classifier)", path)
        return None
    model, meta = load_classifier(path, device)
    check_classifier(path, meta, data)
    report = meta["report"]
    log.info("domain classifier %s: held-out accuracy %.4f", path, report.get("heldout_accuracy", float("nan")))
    return model


def _scores_text(scores: Any, metric: str, step: int) -> str:
    info = scores.info
    head = f"step {step}, {info['num_images']} translations per target domain"
    if metric != "accuracy":
        sizes = sorted({s.kid_subset_size for s in scores.domains.values()})
        span = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        head += f" ({_describe(info)}, KID subsets of {span})"
    lines = [head]
    for name, s in scores.domains.items():
        parts = []
        if s.fid is not None:
            parts.append(f"FID {s.fid:10.4f}   KID {s.kid_mean:.5f} +- {s.kid_std:.5f}")
        if s.accuracy is not None:
            parts.append(f"accuracy {s.accuracy:.4f}")
        lines.append(f"  {name:<16} " + "   ".join(parts))
    if scores.fid_mean is not None:
        lines.append(f"  {'mean':<16} FID {scores.fid_mean:10.4f}   KID {scores.kid_mean:.5f}")
    if scores.domain_accuracy is not None:
        lines.append(f"  domain accuracy (all translations): {scores.domain_accuracy:.4f}")
    if scores.paired_l1 is not None:
        lines.append(f"  paired L1 {scores.paired_l1:.4f}   paired PSNR {scores.paired_psnr:.2f} dB")
    return "\n".join(lines)


def accuracy_command(args: argparse.Namespace) -> int:
    return _checkpoint_command(args, "accuracy")


def train_classifier_command(args: argparse.Namespace) -> int:
    from gan.data import build_data
    from gan.metrics.classifier import classifier_path, save_classifier, train_classifier

    device = _pick_device(args.device)
    state = load_checkpoint(args.checkpoint)
    cfg = config_from_dict(state["config"], where=str(args.checkpoint))
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps: must be at least 1, got {args.steps}")
    data = build_data(cfg.data, train_flip=True)
    c = cfg.metrics.classifier
    model, report = train_classifier(
        data,
        device,
        args.steps or c.steps,
        c.batch_size,
        c.lr,
        c.seed,
        c.width,
        progress=True,
        num_workers=cfg.data.num_workers,
    )
    out = args.out or classifier_path(run_dir_of(args.checkpoint))
    save_classifier(out, model, report, data.domains)
    result = {"classifier": str(out), **report.to_dict()}
    per_domain = ", ".join(f"{k} {v:.3f}" for k, v in report.per_domain.items())
    _print_result(
        args,
        result,
        f"held-out accuracy {report.heldout_accuracy:.4f} on {report.num_heldout} images "
        f"({per_domain}); {report.train_steps} steps in {report.seconds:.1f} s; saved to {out}",
    )
    return 0


def _domain_vector_fn(num_domains: int, multi_label: bool = False):
    """Labels as the float vectors G takes (as Trainer.domain_vector): one-hot, or the 0/1 attribute vector."""
    if multi_label:
        return lambda labels: labels.float()
    return lambda labels: nn.functional.one_hot(labels, num_domains).float()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "translate": translate,
        "paired-l1": paired_l1_command,
        "fid": fid_command,
        "kid": kid_command,
        "accuracy": accuracy_command,
        "train-classifier": train_classifier_command,
    }
    return commands[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
