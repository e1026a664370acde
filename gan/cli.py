"""Command-line entry points behind train.py and evaluate.py (and the console scripts): parse arguments, call the
Python API (gan.run), print, exit. No training or evaluation logic lives here."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from gan import distributed
from gan.errors import ArgumentParser, UserError, one_line, storage_problem
from gan.evaluate import evaluate_command
from gan.run import find_resume, resolve_config, train
from gan.sweep import FINAL, load_sweep, print_commands, run_status, run_sweep, write_experiment
from gan.trainer import DivergedError, PeerFailedError


def run_cli(main: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """Run ``main``; a UserError, or an OSError of the storage (a full disk, a folder without write permission),
    becomes one line on stderr and exit code 2, never a traceback."""
    _console_logging()
    try:
        return main(list(sys.argv[1:] if argv is None else argv))
    except UserError as exc:
        if not _other_rank():  # under torchrun rank 0 says it once: every rank has the same input
            print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, missing permissions: reported as such, in one line
        problem = storage_problem(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`... --print-commands | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


def _other_rank() -> bool:
    """A process of a torchrun launch other than rank 0. Every rank reads the same command line and config, and rank
    0 makes the run folder's checks and shares their outcome, so a UserError is the same on all of them."""
    return distributed.launched() and os.environ.get("RANK", "0") != "0"


class _Stderr(logging.StreamHandler):
    """A handler that always writes to the current ``sys.stderr`` (which tests and notebooks replace), above a
    progress bar if one is showing, with long messages wrapped to the terminal's width (a terminal only)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if sys.stderr.isatty():
                width = max(40, min(shutil.get_terminal_size().columns, 120) - 1)
                text = "\n".join(textwrap.fill(line, width, subsequent_indent="  ") for line in text.splitlines())
            tqdm.write(text, file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise (logging.Handler's own convention)
            self.handleError(record)


def _console_logging() -> None:
    """Warnings of the library on stderr (the run's train.log gets everything from INFO up)."""
    logger = logging.getLogger("gan")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        console = _Stderr()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(console)
    logger.setLevel(logging.INFO)
    if _other_rank():
        for handler in logger.handlers:  # torchrun: rank 0 speaks for the run; the others only report errors
            if isinstance(handler, _Stderr):
                handler.setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------------------- train
def train_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train.py",
        description="Train a StarGAN-style translator with a spectrally normalised discriminator.",
        epilog="With no arguments, trains the embedded default (configs/default.yaml) on built-in synthetic data.",
    )
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config; repeat to layer files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=500")
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<date>-<time>)")
    p.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from a checkpoint or run folder, or 'auto': the newest checkpoint of --run-dir (without "
        "--run-dir: the only run under runs/)",
    )
    s = p.add_argument_group("studies")
    s.add_argument(
        "--sweep", type=Path, metavar="FILE", help="run a sweep file (configs/sweeps/): a run per cell and seed"
    )
    s.add_argument("--workers", type=int, default=1, help="with --sweep: runs at once, the cores split between them")
    s.add_argument("--dry-run", action="store_true", help="with --sweep: list the runs and their status, run nothing")
    s.add_argument(
        "--print-commands", action="store_true", help="with --sweep: one train.py command per run, for a scheduler"
    )
    return p


def _main_train(argv: list[str]) -> int:
    args = train_parser().parse_args(argv)
    if args.sweep is not None and distributed.launched() and os.environ.get("WORLD_SIZE", "1") != "1":
        raise UserError("--sweep under torchrun: a sweep starts its own runs; launch each run with torchrun instead")
    if args.sweep is not None:
        return _main_sweep(args)
    if args.dry_run or args.print_commands or args.workers != 1:
        raise UserError("--dry-run, --print-commands and --workers go with --sweep FILE")
    resume = find_resume(args.resume, args.run_dir)
    cfg = resolve_config(args.config, args.set, resume, args.run_dir if args.resume == "auto" else None)

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        result = train(cfg, args.run_dir, resume if resume is not None else args.resume, announce=say)
    except DivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except PeerFailedError as exc:  # torchrun: rank 0 failed and printed why; this rank stops with it
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown(wait=sys.exc_info()[0] is None)
    if result.summary:
        print("\n".join(result.summary), file=sys.stderr)
    return 0


def _main_sweep(args: argparse.Namespace) -> int:
    if args.config or args.resume:
        raise UserError("--sweep: the sweep file names its configs and resumes by itself; drop --config / --resume")
    sweep = load_sweep(args.sweep, args.run_dir, args.set)
    if args.print_commands:
        write_experiment(sweep)  # the study's HPARAMS table, for runs a scheduler starts
        print("\n".join(print_commands(sweep)))
        return 0
    if args.dry_run:
        for run in sweep.runs:
            print(f"{run_status(run):<11} {run.run_dir}")
        cells, seeds = len({r.cell for r in sweep.runs}), len({r.seed for r in sweep.runs})
        print(f"{len(sweep.runs)} runs ({cells} cells x {seeds} seeds) in {sweep.study_dir}")
        return 0
    results = run_sweep(sweep, args.workers)
    counts = {status: list(results.values()).count(status) for status in sorted(set(results.values()))}
    print(f"{sweep.study_dir}: " + ", ".join(f"{n} {status}" for status, n in counts.items()), file=sys.stderr)
    return 0 if all(status in FINAL for status in results.values()) else 1


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train.py`` and ``spectral-gan-train``."""
    return run_cli(_main_train, argv)


# ------------------------------------------------------------------------------------------------------ evaluate
def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``evaluate.py`` and ``spectral-gan-evaluate``."""
    return run_cli(evaluate_command, argv)


if __name__ == "__main__":  # `python -m gan.cli ...` is train.py (the sweep runner starts runs this way)
    sys.exit(train_main())
