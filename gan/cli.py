"""Command-line entry points behind train.py and evaluate.py (and the console scripts): parse, call gan.*, exit."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gan.checkpoint import latest, load_checkpoint
from gan.config import DEFAULT_CONFIG, Config, config_to_dict, dump_config, load_config
from gan.errors import CheckpointError, ConfigError, UserError

log = logging.getLogger("gan")


def _run_cli(main: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """Run ``main``; a UserError becomes one line on stderr and exit code 2, never a traceback."""
    try:
        return main(list(sys.argv[1:] if argv is None else argv))
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line. A DataLoader worker re-raises our errors with its traceback in the
    message; the last line is ours, after the ``module.Class: `` prefix that the traceback adds."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    last = lines[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return last.removeprefix(prefix)


# --------------------------------------------------------------------------------------------------------- train
def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a StarGAN-style translator with a spectrally normalised discriminator.",
        epilog="With no arguments, trains the embedded default (configs/default.yaml) on built-in synthetic data.",
    )
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config; repeat to layer files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=500")
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<date>-<time>)")
    p.add_argument("--resume", metavar="auto|PATH", help="continue from a checkpoint, or 'auto' for the newest one")
    return p


def _find_resume(spec: str | None, run_dir: Path | None) -> Path | None:
    if spec is None:
        return None
    if spec != "auto":
        path = Path(spec)
        if path.is_dir():  # a run folder or its checkpoints folder: its newest checkpoint
            found = latest(path / "checkpoints") or latest(path)
            if found is None:
                raise CheckpointError(f"{path}: no checkpoint in this folder")
            return found
        return path
    if run_dir is not None:
        return latest(run_dir / "checkpoints")
    candidates = [c for d in Path("runs").glob("*") if (c := latest(d / "checkpoints")) is not None]
    return max(candidates, key=lambda c: c.stat().st_mtime) if candidates else None


def _resolve_config(args: argparse.Namespace, resume_state: dict[str, Any] | None, resume: Path | None) -> Config:
    """The checkpoint's own config when resuming without --config; else the files (or the embedded default)."""
    if resume_state is not None and not args.config:
        return load_config(overrides=args.set, base=resume_state["config"], base_name=str(resume))
    return load_config(args.config or [DEFAULT_CONFIG], args.set)


def check_resume_compatible(cfg: Config, state: dict[str, Any], path: Path) -> None:
    """Refuse to resume when the model (or what shapes it: image size, domains) differs from the checkpoint's."""
    old = state["config"]
    new = config_to_dict(cfg)
    diffs = _dict_diff(old.get("model", {}), new["model"], "model.")
    if old.get("data", {}).get("image_size") != new["data"]["image_size"]:
        diffs.append("data.image_size")
    if diffs:
        raise CheckpointError(
            f"{path}: cannot resume with a changed model config ({', '.join(diffs)}); start a new run instead"
        )


def _dict_diff(a: dict[str, Any], b: dict[str, Any], prefix: str) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and not key.endswith("_options"):
            out += _dict_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def _setup_logging(run_dir: Path) -> None:
    logger = logging.getLogger("gan")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    file_handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(file_handler)
    logger.addHandler(console)


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def _main_train(argv: list[str]) -> int:
    args = train_parser().parse_args(argv)
    resume = _find_resume(args.resume, args.run_dir)
    if args.resume == "auto" and resume is None:
        print("--resume auto: no checkpoint found; starting a new run", file=sys.stderr)
    state = load_checkpoint(resume) if resume is not None else None
    cfg = _resolve_config(args, state, resume)
    if state is not None:
        check_resume_compatible(cfg, state, resume)
    run_dir = args.run_dir or (resume.parent.parent if resume else Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    if state is None and latest(run_dir / "checkpoints") is not None:
        raise UserError(
            f"{run_dir}: this run folder already holds checkpoints; continue it with --resume auto or choose "
            "another --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_text(dump_config(cfg), run_dir / "config.yaml")
    _setup_logging(run_dir)
    return _train(cfg, run_dir, state, resume)


def atomic_save_text(text: str, path: Path) -> None:
    """Write a text file atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _train(cfg: Config, run_dir: Path, state: dict[str, Any] | None, resume: Path | None = None) -> int:
    from gan.data import build_data
    from gan.hooks import build_hooks
    from gan.trainer import NonFiniteLossError, Trainer
    from gan.writers import RunWriter

    device = pick_device(cfg.train.device)
    if cfg.train.deterministic:
        use_deterministic_kernels()
    data = build_data(cfg.data)
    if data.skipped:
        log.warning("skipped %d unreadable images (data.skip_bad_images)", data.skipped)
    # Events up to the checkpoint step were logged before it was saved; later ones belong to the lost tail.
    writer = RunWriter(run_dir, purge_step=int(state["step"]) + 1 if state else None)
    hooks = build_hooks(cfg, writer, run_dir, has_paired=data.paired is not None)
    trainer = Trainer(cfg, data, device, hooks)
    if state is not None:
        _restore(trainer, state, resume)
    print(f"run dir: {run_dir}  (tensorboard --logdir {run_dir.parent})", file=sys.stderr)
    restore = _install_stop_handlers(trainer)
    try:
        trainer.fit()
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        restore()
        writer.close()
    _print_summary(trainer, hooks, run_dir)
    return 0


def _restore(trainer: Any, state: dict[str, Any], path: Path | None) -> None:
    """Load a checkpoint into a freshly built trainer; a mismatch is a CheckpointError naming the file."""
    if list(state.get("domains", [])) != list(trainer.data.domains):
        raise CheckpointError(
            f"{path}: the checkpoint was trained on domains {state.get('domains')}, the data now has "
            f"{trainer.data.domains}; start a new run instead"
        )
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: does not fit this model ({reason[:200]})") from None
    log.info("resumed at step %d from %s", trainer.step, path)


def use_deterministic_kernels() -> None:
    """Make GPU runs repeatable: deterministic cuDNN/cuBLAS kernels (CPU kernels here already are)."""
    # cuBLAS reads this when its first handle is created, which has not happened yet in this process.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def _install_stop_handlers(trainer: Any) -> Callable[[], None]:
    """Ctrl-C or SIGTERM asks the trainer to stop after the current step (it then saves a checkpoint); a second
    Ctrl-C interrupts at once."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        print(f"\nreceived {signal.Signals(signum).name}: saving a checkpoint and stopping", file=sys.stderr)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _print_summary(trainer: Any, hooks: list[Any], run_dir: Path) -> None:
    lines = [f"finished at step {trainer.step}; checkpoints in {run_dir / 'checkpoints'}"]
    for hook in hooks:
        lines += hook.summary()
    print("\n".join(lines), file=sys.stderr)


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train.py`` and ``spectral-gan-train``."""
    return _run_cli(_main_train, argv)


# ------------------------------------------------------------------------------------------------------ evaluate
def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``evaluate.py`` and ``spectral-gan-evaluate``."""
    from gan.evaluate import main

    return _run_cli(main, argv)
