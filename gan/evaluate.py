"""``evaluate.py`` subcommands: ``fid``, ``kid`` (two image folders, or a checkpoint's translations per target
domain), ``accuracy`` and ``train-classifier`` (domain accuracy), ``translate`` (apply a model to your images),
``paired-l1`` (synthetic ground truth) and ``compare`` (groups of runs over seeds: gan.compare)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gan.compare import OUTPUT_FILES, compare_runs, find_runs, report_text, write_report
from gan.data import IMAGE_SUFFIXES
from gan.errors import ArgumentParser, UserError
from gan.metrics.classifier import classifier_path
from gan.metrics.evaluation import TranslationScores, value_span
from gan.outputs import check_output_file, check_output_folder
from gan.run import (
    MAX_SIDE,
    MIN_SIDE,
    SIZE_MULTIPLE,
    evaluate_checkpoint,
    folder_fid,
    folder_kid,
    input_files,
    metric_config,
    paired_l1_of,
    pick_device,
    run_dir_of,
    save_folder_stats,
    train_checkpoint_classifier,
    translate_files,
    translate_size,
)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="evaluate.py", description="Evaluate or apply a trained spectral-gan model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("translate", help="translate an image or a folder of images into target domains")
    t.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by train.py (e.g. last.pt)")
    t.add_argument("--input", type=Path, required=True, help="an image file or a folder of images")
    t.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="DOMAIN[,DOMAIN...]",
        help="target domain name; repeat for several outputs. Multi-label models: the listed attributes are set "
        "(and the others of their exclusive group cleared), every other attribute of the input is kept",
    )
    t.add_argument(
        "--labels",
        metavar="ATTR[,ATTR...]|none",
        help="multi-label models: the attributes the input images have (default: predicted by the run's domain "
        "classifier, <run>/classifier.pt)",
    )
    t.add_argument(
        "--out",
        type=Path,
        required=True,
        help="an image file (e.g. out.png: one input and one --to only) or a folder, which gets "
        "<name>_to_<domain>.png files; several inputs or targets with an image-file --out are refused",
    )
    t.add_argument(
        "--size",
        default="model",
        metavar="model|input|N",
        help="the size G is applied at, which is the output's size: model (default) = each input centre-cropped "
        "and resized as the training data was, output at the model's resolution (data.image_size); input = the "
        "whole image (no crop) at its own size; N = the whole image resized so that its shorter side is N "
        f"(a multiple of {SIZE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}), aspect ratio kept. input and N round each "
        f"side to a multiple of {SIZE_MULTIPLE} and refuse more than {MAX_SIDE}x{MAX_SIDE} pixels (memory)",
    )
    t.add_argument("--force", action="store_true", help="overwrite output files that exist (refused otherwise)")
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
        f.add_argument(
            "--extractor",
            choices=["auto", "inception", "classifier"],
            help="--checkpoint: the features (default: the run's hooks.fid.extractor; auto = Inception if its weights "
            "are found, else the domain classifier's, logged as classifier_fd/kd, as the training run does)",
        )
        f.add_argument("--classifier", type=Path, help="--checkpoint: a classifier file instead of the run's")
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
    m.add_argument(
        "--num-images",
        type=int,
        help="held-out source images, each translated into every other domain (default: the run's "
        "hooks.paired_l1.num_images, as its eval/paired_l1 curve)",
    )
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    m.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    c = sub.add_parser(
        "compare",
        help="compare groups of runs (every config value but the seed) over seeds: report, tests, plots",
        description="Group run folders (or every run below study folders) by config minus train.seed and compare "
        "their metric: final value over seeds (mean, std, 95%% interval), divergence, best, curve mean, steps to "
        "a threshold, s/step, Welch's test against a baseline group.",
    )
    c.add_argument("paths", nargs="+", metavar="PATH", help="run folders or study folders")
    c.add_argument("--metric", help="scalar tag (default: eval/fid/mean, else eval/classifier_fd/mean, else paired L1)")
    c.add_argument("--mode", choices=["min", "max"], help="which end is better (default: max for accuracy/PSNR)")
    c.add_argument("--baseline", metavar="GROUP", help="the group the others are tested against (default: first)")
    c.add_argument("--threshold", type=float, help="for steps-to-threshold (default: the baseline's final mean)")
    c.add_argument("--tolerance", type=float, default=0.02, help="relative gap counted as seed noise (default 0.02)")
    c.add_argument("--out", type=Path, metavar="DIR", help="write report.md, report.csv, report.json and PNG plots")
    c.add_argument("--json", action="store_true", help="print the report as a JSON object")
    return p


def compare_command(args: argparse.Namespace) -> int:
    if args.tolerance < 0:
        raise UserError(f"--tolerance: must be >= 0, got {args.tolerance}")
    if args.out is not None:
        check_output_folder(args.out, "--out", hint="give a folder for report.md, report.csv, report.json and plots")
        for name in OUTPUT_FILES:  # a folder or a read-only file where one of them goes
            check_output_file(args.out / name, "--out", hint="remove it or give another --out")
    runs = find_runs(args.paths)  # read once: the report and its plots use the same runs
    report = compare_runs(runs, args.metric, args.mode, args.baseline, args.threshold, args.tolerance)
    if args.out is not None:
        written = write_report(report, runs, args.out)
        print(f"wrote {', '.join(p.name for p in written)} to {args.out}", file=sys.stderr)
    print(
        json.dumps(report, indent=2, allow_nan=False) if args.json else report_text(report),
        end="" if not args.json else "\n",
    )
    return 0


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


def _print_result(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    print(json.dumps(result, indent=2) if args.json else text)


def _positive(args: argparse.Namespace, *options: str, minimum: int = 1) -> None:
    for option in options:
        value = getattr(args, option, None)
        if value is not None and value < minimum:
            raise UserError(f"--{option.replace('_', '-')}: must be at least {minimum}, got {value}")


def _metric_options(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's ``metrics.*`` settings (None: keep the config's)."""
    _positive(args, "subsets", "batch_size")
    _positive(args, "subset_size", minimum=2)  # KID's unbiased estimate compares pairs within a subset
    return {
        "inception_weights": getattr(args, "inception_weights", None),
        "protocol": getattr(args, "protocol", None),
        "stats_cache": getattr(args, "stats_cache", None),
        "kid_subsets": getattr(args, "subsets", None),
        "kid_subset_size": getattr(args, "subset_size", None),
        "batch_size": getattr(args, "batch_size", None),
        "fast_inception": False if getattr(args, "exact", False) else None,
    }


def _describe(info: dict[str, Any]) -> str:
    weights = "" if info.get("official_weights", True) else ", UNOFFICIAL weights " + str(info.get("weights_sha256"))
    source = (
        f", weights from {info['weights_source']}" if info.get("weights_source") not in (None, "state dict") else ""
    )
    return f"{info['extractor']}, protocol {info['protocol']}{source}{weights}"


def translate(args: argparse.Namespace) -> int:
    size = translate_size(args.size)  # a bad --size is reported before the inputs are looked at
    _check_translate_out(args.out)
    files = input_files(args.input)
    n = translate_files(
        args.checkpoint,
        files,
        args.to,
        args.out,
        pick_device(args.device, "--device"),
        not args.no_ema,
        args.labels,
        size=size,
        force=args.force,
    )
    print(f"wrote {n} image(s) to {args.out}")
    return 0


def _check_translate_out(out: Path) -> None:
    """An image suffix names the output file (gan.run decides whether one input and one target can fill it); any
    other --out is a folder. An existing file without --force is refused by gan.run, with its count of outputs."""
    if out.suffix.lower() in IMAGE_SUFFIXES:
        hint = f"give an image file name or a folder without the {out.suffix} suffix"
        check_output_file(out, "--out", force=True, hint=hint)
    else:
        check_output_folder(out, "--out", hint="name a folder, or an image file (e.g. out.png)")


def paired_l1_command(args: argparse.Namespace) -> int:
    _positive(args, "num_images")
    result = paired_l1_of(args.checkpoint, pick_device(args.device, "--device"), args.num_images)
    text = (
        f"paired L1 at step {result['step']}: {result['paired_l1']:.4f} (PSNR {result['paired_psnr']:.2f} dB; "
        f"{result['num_images']} held-out sources x every other domain)"
    )
    print(json.dumps(result) if args.json else text)
    return 0


def fid_command(args: argparse.Namespace) -> int:
    return _distance_command(args, "fid")


def kid_command(args: argparse.Namespace) -> int:
    return _distance_command(args, "kid")


def _distance_command(args: argparse.Namespace, metric: str) -> int:
    save_stats = metric == "fid" and args.save_stats
    if args.checkpoint is not None:
        if args.paths:
            raise UserError(f"{metric}: give two paths or --checkpoint, not both")
        if save_stats:
            raise UserError("--save-stats: writes the statistics of a folder (FOLDER OUT.npz), not of --checkpoint")
        return _checkpoint_command(args, metric)
    if len(args.paths) != 2:
        raise UserError(f"{metric}: give two image folders (for fid also .npz statistics), or --checkpoint")
    if save_stats:
        check_output_file(args.paths[1], "--save-stats", args.force, hint="give a file name ending in .npz")
    cfg, device = metric_config(**_metric_options(args)), pick_device(args.device, "--device")
    if save_stats:
        result = save_folder_stats(args.paths[0], args.paths[1], cfg, device, args.force)
        text = f"wrote statistics of {result['num_images']} images ({_describe(result)}) to {result['stats']}"
    elif metric == "kid":
        result = folder_kid(args.paths, cfg, device)
        n1, n2 = result["num_images"]
        text = (
            f"KID ({_describe(result)}, {n1} vs {n2} images, {result['subsets']} subsets of {result['subset_size']}):"
            f" {result['kid_mean']:.6g} +- {result['kid_std']:.3g}"
        )
    else:
        result = folder_fid(args.paths, cfg, device)
        n1, n2 = result["num_images"]
        text = f"FID ({_describe(result)}, {n1} vs {n2} images): {result['fid']:.6f}"
    _print_result(args, result, text)
    return 0


def _checkpoint_command(args: argparse.Namespace, metric: str) -> int:
    """fid / kid / accuracy of a checkpoint's translations, per target domain (see gan.metrics.evaluation)."""
    _positive(args, "num_images", minimum=1 if metric == "accuracy" else 2)  # a covariance needs two images
    options = _metric_options(args)
    if options["stats_cache"] and not getattr(args, "no_cache", False):
        check_output_folder(Path(options["stats_cache"]), "--stats-cache")
    scores, step = evaluate_checkpoint(
        args.checkpoint,
        options,
        metric=metric,
        num_images=args.num_images,
        ema=not args.no_ema,
        device=pick_device(args.device, "--device"),
        classifier=getattr(args, "classifier", None),
        extractor=getattr(args, "extractor", None),
        cache=not getattr(args, "no_cache", False),
        progress=True,
    )
    result = {"checkpoint": str(args.checkpoint), "step": step, **scores.to_dict()}
    _print_result(args, result, _scores_text(scores, metric, step))
    return 0


def _scores_text(scores: TranslationScores, metric: str, step: int) -> str:
    info = scores.info
    head = f"step {step}, {scores.sample_sizes()}"
    if metric != "accuracy":
        span = value_span(s.kid_subset_size for s in scores.domains.values())
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
        lines.append(
            f"  paired L1 {scores.paired_l1:.4f}   paired PSNR {scores.paired_psnr:.2f} dB "
            f"({info['paired_images']} held-out sources x every other domain)"
        )
    return "\n".join(lines)


def accuracy_command(args: argparse.Namespace) -> int:
    return _checkpoint_command(args, "accuracy")


def train_classifier_command(args: argparse.Namespace) -> int:
    _positive(args, "steps")
    _check_classifier_out(args.checkpoint, args.out)
    out, report = train_checkpoint_classifier(
        args.checkpoint, pick_device(args.device, "--device"), args.out, args.steps
    )
    result = {"classifier": str(out), **report.to_dict()}
    per_domain = ", ".join(f"{k} {v:.3f}" for k, v in report.per_domain.items())
    _print_result(
        args,
        result,
        f"held-out accuracy {report.heldout_accuracy:.4f} on {report.num_heldout} images "
        f"({per_domain}); {report.train_steps} steps in {report.seconds:.1f} s; saved to {out}",
    )
    return 0


def _check_classifier_out(checkpoint: Path, out: Path | None) -> None:
    """train-classifier replaces its output file (no --force); never the checkpoint itself. The default, in the
    checkpoint's run folder, is checked once the checkpoint exists (otherwise loading it says what is missing)."""
    if out is None:
        if not checkpoint.is_file():
            return
        out, option = classifier_path(run_dir_of(checkpoint)), "--out (default)"
    else:
        option = "--out"
    check_output_file(out, option, force=True, hint="give a file name (e.g. classifier.pt)")
    if out.exists() and checkpoint.exists() and out.samefile(checkpoint):
        raise UserError(f"{option} {out}: is the checkpoint given as --checkpoint; give another file name")


COMMANDS = {
    "translate": translate,
    "paired-l1": paired_l1_command,
    "fid": fid_command,
    "kid": kid_command,
    "accuracy": accuracy_command,
    "train-classifier": train_classifier_command,
    "compare": compare_command,
}


def evaluate_command(argv: list[str]) -> int:
    """Parse ``evaluate.py`` arguments and run the subcommand; UserErrors are left to the caller (gan.cli)."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)
