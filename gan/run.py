"""The Python API: train a run, resume it, load its generator, score a checkpoint. The CLIs are thin layers on top.

from gan.build import load_run_config
from gan.run import train, load_generator

cfg = load_run_config(["configs/default.yaml"], ["train.steps=200", "train.lr_decay_steps=100"])
result = train(cfg, "runs/quick")                     # -> RunResult(run_dir, step, completed, summary)
G, space = load_generator(result.last_checkpoint)     # eval mode; space.vectors(labels) conditions it
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.utils import save_image

try:
    import fcntl  # the run folder's lock (POSIX)
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None  # type: ignore[assignment]
from tqdm.auto import tqdm

from gan import distributed
from gan.build import (
    build_data,
    build_hooks,
    build_label_space,
    build_trainer,
    check_classifier,
    classifier_provenance,
    config_of_state,
    evaluation_parts,
    fit_classifier,
    generator_from_state,
    hparam_metrics,
    inception_extractor,
    load_run_config,
    models_problem,
    obtain_classifier,
    run_hparams,
    with_metric_options,
)
from gan.checkpoint import LAST, latest, load_checkpoint, remove_stale_temporaries, step_checkpoints
from gan.config import DEFAULT_CONFIG, Config, config_to_dict, dump_config, lr_schedule_problem
from gan.data import (
    IMAGE_SUFFIXES,
    DataBundle,
    image_dimensions,
    image_transform,
    list_images,
    load_rgb,
    resize_transform,
    unreadable,
)
from gan.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    UserError,
    one_line,
    reason,
    special_file,
    storage_problem,
)
from gan.hparams import Summary, experiment_summary, session_end_summary, session_start_summary
from gan.interrupt import clear_stop, request_stop, stop_requested
from gan.labels import LabelSpace
from gan.metrics.classifier import classifier_path, load_classifier, save_classifier
from gan.metrics.evaluation import (
    TranslationScores,
    check_classifier_fits,
    evaluate_translations,
    paired_scores,
    sample_shortfall,
)
from gan.metrics.features import folder_features
from gan.metrics.fid import feature_statistics, frechet_distance, load_stats, save_stats
from gan.metrics.inception import FEATURE_DIM, find_weights
from gan.metrics.kid import kernel_inception_distance
from gan.models.modes import evaluating
from gan.outputs import check_output_file, check_output_folder
from gan.trainer import DivergedError, Trainer, lr_factor
from gan.writers import RunWriter, event_folder, has_events, last_values, write_summaries

log = logging.getLogger(__name__)

Announce = Callable[[str], None]


@dataclass
class RunResult:
    """What a finished (or stopped) training run left behind."""

    run_dir: Path
    step: int  # completed steps
    completed: bool  # ran to train.steps (False after a stop request)
    resumed_from: Path | None = None
    summary: list[str] = field(default_factory=list)  # the hooks' end-of-run lines (first -> last evaluation)

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / LAST


# --------------------------------------------------------------------------------------------------------- device
def pick_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error naming ``option``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option}: 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def use_deterministic_kernels() -> None:
    """Make GPU runs repeatable: deterministic cuDNN/cuBLAS kernels (CPU kernels here already are)."""
    # cuBLAS reads this when its first handle is created, which has not happened yet in this process.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------------------------------------- resume
def run_dir_of(checkpoint: Path) -> Path:
    """``runs/x`` for ``runs/x/checkpoints/last.pt``; the checkpoint's own folder otherwise."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def find_resume(spec: str | Path | None, run_dir: Path | None, runs_root: Path = Path("runs")) -> Path | None:
    """The checkpoint ``--resume`` means: a file; a run folder (its newest checkpoint); or ``auto``: the newest
    checkpoint of ``run_dir``, or without one the only run under ``runs_root`` that has checkpoints (several
    candidates are refused: resuming the wrong run would rewrite it). None: nothing to resume."""
    if spec is None:
        return None
    if str(spec) != "auto":
        path = Path(spec)
        if path.is_dir():  # a run folder or its checkpoints folder: its newest checkpoint
            found = latest(path / "checkpoints") or latest(path)
            if found is None:
                raise CheckpointError(f"{path}: no checkpoint in this folder")
            return found
        return path
    if run_dir is not None:
        return latest(Path(run_dir) / "checkpoints")
    found = (c for d in runs_root.glob("*") if (c := latest(d / "checkpoints")) is not None)
    candidates = sorted(found, key=lambda c: c.stat().st_mtime)
    if len(candidates) > 1:
        names = ", ".join(str(run_dir_of(c)) for c in reversed(candidates[-3:]))
        raise UserError(
            f"--resume auto: {runs_root} holds {len(candidates)} runs with checkpoints (most recent: {names}); "
            "name the one to continue with --run-dir"
        )
    return candidates[0] if candidates else None


def resolve_config(files: list[str], overrides: list[str], resume: Path | None, run_dir: Path | None = None) -> Config:
    """The config of a training command: the checkpoint's own when resuming without config files, else the files
    (or the embedded default, configs/default.yaml), with the ``--set`` overrides on top. ``run_dir`` (given for
    ``--resume auto`` that found no checkpoint): a run folder whose earlier attempt stopped before its first
    checkpoint is started again from its own ``config.yaml``, not from the default."""
    if resume is not None and not files:
        state = load_checkpoint(resume)
        return load_run_config(overrides=overrides, base=state["config"], base_name=str(resume))
    if resume is None and not files and run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        log.warning("--resume auto: no checkpoint in %s yet; starting it again from its config.yaml", run_dir)
        return load_run_config([Path(run_dir) / "config.yaml"], overrides)
    return load_run_config(files or [DEFAULT_CONFIG], overrides)


def _run_dir_for(checkpoint: Path) -> Path:
    """The run folder of a checkpoint given without --run-dir: only a run's own ``checkpoints/`` folder counts, so
    that resuming a checkpoint copied elsewhere (``~/Downloads/last.pt``) never turns that folder into a run."""
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    raise UserError(
        f"{checkpoint}: not inside a run's checkpoints/ folder; name the run folder to continue in with --run-dir"
    )


def _new_run_dir(root: Path) -> Path:
    """``root/<date>-<time>``, made exclusively: two runs started in the same second get different folders."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        candidate = root / (stamp if n == 1 else f"{stamp}-{n}")
        if not candidate.exists():
            return candidate
    raise UserError(f"{root}: cannot find a free run folder name for {stamp}")


def _check_run_dir(run_dir: Path, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
    """A folder that holds checkpoints is only written into to continue its run from its newest checkpoint: a new
    run there would mix two runs; resuming another run's checkpoint, or an older one of its own, would purge its
    logs and overwrite or rotate away later checkpoints (branch into a new --run-dir instead). A checkpoint is not
    continued in a folder that holds another run's files either (its config, logs or events, from an attempt that
    stopped before its first checkpoint): they would be replaced."""
    check_output_folder(run_dir, "--run-dir")  # not a file, nor under one; writable or creatable
    folder = run_dir / "checkpoints"
    existing = latest(folder)
    if existing is None:
        if checkpoint is not None and checkpoint.resolve().parent != folder.resolve():
            files = sorted(p.name for p in _run_files(run_dir))
            if files:
                raise UserError(
                    f"{run_dir}: holds another run's files ({', '.join(files[:3])}); continue {checkpoint} in a new "
                    "--run-dir"
                )
        return
    if checkpoint is None or state is None:
        raise UserError(
            f"{run_dir}: this run folder already holds checkpoints; continue it with --resume auto or choose "
            "another --run-dir"
        )
    if checkpoint.resolve().parent != folder.resolve():
        raise UserError(
            f"{run_dir}: holds checkpoints of its own run; continue {checkpoint} in another --run-dir (or in the "
            "run folder it comes from)"
        )
    newest = _newest_step(folder)
    if newest > int(state["step"]):
        raise UserError(
            f"{checkpoint}: step {int(state['step'])} is not the newest checkpoint of {run_dir} (step {newest}); "
            "continuing it there would overwrite the later ones: branch it into a new folder with --run-dir"
        )


def _run_files(run_dir: Path) -> list[Path]:
    """The files in ``run_dir`` that a training writes (config, logs, events, status)."""
    if not run_dir.is_dir():
        return []
    names = ("config.yaml", "scalars.jsonl", "train.log", STATUS)
    return [p for p in run_dir.iterdir() if p.name in names or p.name.startswith("events.out.tfevents.")]


def _newest_step(folder: Path) -> int:
    """The highest step among a run's checkpoints (last.pt is read memory-mapped: only its step is needed)."""
    steps = [int(p.stem.split("_")[1]) for p in step_checkpoints(folder)]
    last = folder / LAST
    if last.is_file():
        try:
            steps.append(int(torch.load(last, map_location="cpu", weights_only=True, mmap=True)["step"]))
        except Exception:  # an unreadable last.pt is reported when it is loaded, not here
            pass
    return max(steps, default=0)


def check_eval_inputs(cfg: Config) -> None:
    """Files the run's evaluations will need, looked up now: the Inception weights when ``hooks.fid.extractor`` is
    ``inception``, or ``auto`` with an explicitly configured path (a one-line WeightsError otherwise)."""
    h, m = cfg.hooks.fid, cfg.metrics
    if h.every and (h.extractor == "inception" or (h.extractor == "auto" and m.inception_weights)):
        find_weights(m.inception_weights or None)


def check_evaluable(cfg: Config, data: DataBundle, run_dir: Path) -> None:
    """What the run's fid hook will need, checked now rather than at its first evaluation (after the run folder
    was made, or after a resume had purged the logs): images enough in every domain, and a readable domain
    classifier that fits the data where one is on disk (``metrics.classifier.path`` or ``<run>/classifier.pt``)."""
    if not cfg.hooks.fid.every:
        return
    problem = sample_shortfall(data, cfg.hooks.fid.num_images, cfg.metrics.real_split)
    if problem is not None:
        raise DataError(f"hooks.fid: {problem}; or turn the hook off (hooks.fid.every: 0)")
    explicit = cfg.metrics.classifier.path
    path = Path(explicit) if explicit else classifier_path(run_dir)
    if path.is_file():
        _, meta = load_classifier(path, torch.device("cpu"))
        check_classifier(path, meta, data)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what creating it would add), or None."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def check_trainable(cfg: Config) -> None:
    """The checks that load_run_config makes for training (models buildable, lr decay within the run), for a
    Config from anywhere; a problem is a ConfigError naming its key."""
    for check in (models_problem, lr_schedule_problem):
        problem = check(cfg)
        if problem is not None:
            raise ConfigError(f"config: {problem[0]}: {problem[1]}")


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


def restore(trainer: Trainer, state: dict[str, Any], path: Path | None) -> None:
    """Load a checkpoint into a freshly built trainer; a mismatch is a CheckpointError naming the file."""
    recorded = state.get("num_train")
    if recorded is not None and int(recorded) != len(trainer.data.train):
        log.warning(
            "%s: the run trained on %d images, the data now has %d: the batches after the resume differ from the "
            "interrupted run's",
            path,
            int(recorded),
            len(trainer.data.train),
        )
    if list(state.get("domains", [])) != list(trainer.data.domains):
        raise CheckpointError(
            f"{path}: the checkpoint was trained on domains {state.get('domains')}, the data now has "
            f"{trainer.data.domains}; start a new run instead"
        )
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: does not fit this model ({reason(exc, 200)})") from None


def _schedule_change(old: dict[str, Any], cfg: Config, step: int) -> str | None:
    """A warning when a resume with other train.steps / lr_decay_steps moves the learning-rate decay."""
    o_steps, o_decay = int(old.get("steps", cfg.train.steps)), int(old.get("lr_decay_steps", cfg.train.lr_decay_steps))
    n_steps, n_decay = cfg.train.steps, cfg.train.lr_decay_steps
    before, after = lr_factor(step, o_steps, o_decay), lr_factor(step, n_steps, n_decay)
    if (o_steps, o_decay) == (n_steps, n_decay) or before == after:
        return None
    return (
        f"train.steps/lr_decay_steps changed from {o_steps}/{o_decay} to {n_steps}/{n_decay}: the linear decay now "
        f"runs from step {n_steps - n_decay} to {n_steps}, so the learning rate at step {step} becomes "
        f"{after:.3g} x (was {before:.3g} x) the configured value"
    )


# ----------------------------------------------------------------------------------------------------- lifecycle
@contextmanager
def _stop_on_signals(enabled: bool) -> Iterator[None]:
    """Ctrl-C or SIGTERM asks the run to stop after the current step, or within seconds during long hook work (it
    then saves a checkpoint). A second Ctrl-C ends the process at once with exit code 130 and one line, writing
    nothing more: raising KeyboardInterrupt at an arbitrary point could leave a half-updated state for the
    checkpoint hook, and a traceback. Checkpoints are written atomically, so the newest one on disk stays complete
    (a temporary file it leaves is removed by the next training there). Only in the main thread (Python's rule)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    main_process = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != main_process:
            return  # a DataLoader worker (forked with this handler): the main process handles the stop
        if stop_requested() and signum == signal.SIGINT:
            os.write(2, b"\nerror: second Ctrl-C: stopped at once; the newest checkpoint on disk is kept\n")
            os._exit(130)
        request_stop()
        log.warning("received %s: saving a checkpoint and stopping", signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _LogFile(logging.FileHandler):
    """train.log; a record it cannot write (a full disk) is dropped in silence: the error that matters is reported
    by the write that failed in the run itself, in one line, not by logging's traceback on stderr."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


@contextmanager
def _run_log(run_dir: Path) -> Iterator[None]:
    """``<run_dir>/train.log`` receives the library's log records (INFO and up) for the duration."""
    logger = logging.getLogger("gan")
    handler = _LogFile(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


class _RunFolderLock:
    """An open ``<run>/.lock`` holding an exclusive POSIX lock; ``with`` releases it (closing the file)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def _hold_run_folder(run_dir: Path) -> _RunFolderLock:
    """Refuse a second live training in ``run_dir``: an exclusive, non-blocking lock on ``<run>/.lock`` (with the
    holder's pid in it), held until the training ends. The OS drops it when its process dies, so a kill -9 leaves
    no stale lock. Without fcntl (Windows) there is no lock."""
    if fcntl is None:
        return _RunFolderLock(None)
    handle = open(run_dir / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 - closed by _RunFolderLock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip()
        handle.close()
        holder = f" (pid {owner})" if owner.isdigit() else ""
        raise UserError(
            f"{run_dir}: another training is running in this run folder{holder}; wait for it to end or give "
            "another --run-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return _RunFolderLock(handle)


def tensorboard_command(logdir: Path) -> str:
    """A command that starts TensorBoard on ``logdir`` in this installation: the ``tensorboard`` script beside this
    Python (``.venv/bin/tensorboard`` after the README's set-up, which does not put it on the PATH), relative to the
    working directory where that is shorter."""
    script = Path(sys.executable).parent / "tensorboard"
    if not script.is_file():
        return f"{Path(sys.executable).name} -m tensorboard.main --logdir {logdir}"
    if shutil.which("tensorboard") == str(script):
        return f"tensorboard --logdir {logdir}"
    try:
        shown = script.relative_to(Path.cwd())
    except ValueError:
        shown = script
    return f"{shown} --logdir {logdir}"


def _write_config(cfg: Config, run_dir: Path, step: int | None) -> None:
    """``config.yaml`` holds the resolved config; a resume with a changed config (or a new start in a folder whose
    earlier attempt stopped before its first checkpoint) keeps the previous one beside it."""
    path, text = run_dir / "config.yaml", dump_config(cfg)
    step = step or 0
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if old == text:
            return
        keep = run_dir / f"config.before-step{step}.yaml"
        for n in range(2, 10_000):
            if not keep.exists():
                break
            keep = run_dir / f"config.before-step{step}-{n}.yaml"  # a second resume at the same step keeps both
        keep.write_text(old, encoding="utf-8")
        log.warning("this run's config differs from %s; the previous one is kept as %s", path, keep.name)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def train(
    cfg: Config,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    *,
    announce: Announce | None = None,
    handle_signals: bool = True,
) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (default ``runs/<date>-<time>``), or continue a run.

    ``resume``: None (a new run; a folder that already holds checkpoints is refused), ``"auto"`` (the newest
    checkpoint of ``run_dir``, or the only run under ``runs/``; a new run if there is none), a run folder or a
    checkpoint file. The run folder is created only once data and models are built, and removed again (with any
    parent it made) if the run fails before training begins. Raises DivergedError when training diverges (the
    last good checkpoint is kept) and UserError subclasses for bad input; Ctrl-C/SIGTERM end the run with a
    checkpoint. ``<run_dir>/status.json`` says how the run ended: completed, interrupted, diverged or failed (with
    the step and the reason). ``announce`` receives the few lines a user should see at once (default: the log).
    """
    say = announce or log.info
    clear_stop()
    check_trainable(cfg)  # also for a Config not made by load_run_config (a sweep runner's dataclasses.replace)
    device = distributed.init(pick_device(cfg.train.device))  # under torchrun: join the run's other processes
    main = distributed.is_main()
    run_dir, path, state = _on_main(lambda: _prepare_run(cfg, run_dir, resume, say))
    if not main and path is not None:
        state = load_checkpoint(path)  # rank 0 chose and checked it (a multi-node run needs a shared file system)
    if cfg.train.deterministic:
        use_deterministic_kernels()
    data = build_data(cfg.data)
    trainer = build_trainer(cfg, data, device)
    if state is not None:
        restore(trainer, state, path)  # a checkpoint of other domains is named first: the root of the mismatch
    if main:
        check_evaluable(cfg, data, run_dir)
    if state is not None:
        if main:
            say(f"resuming {run_dir} from step {trainer.step} ({path})")
            change = _schedule_change(state["config"].get("train", {}), cfg, trainer.step)
            if change:
                log.warning(change)
    if not main:
        return _train_worker(trainer, run_dir, path, handle_signals)
    new_folder = _first_missing(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if new_folder is not None:
            shutil.rmtree(new_folder, ignore_errors=True)
        raise UserError(f"--run-dir {run_dir}: cannot create it ({reason(exc)})") from None
    started: list[bool] = []  # set once fit() begins: from then on the folder holds the run's results
    try:
        lock = _hold_run_folder(run_dir)  # before anything is written: a live training's folder is not touched
    except BaseException:
        if new_folder is not None:
            shutil.rmtree(new_folder, ignore_errors=True)
        raise
    try:
        with lock:
            for folder in (run_dir / "checkpoints", run_dir / "images"):  # only trainings write there
                remove_stale_temporaries(folder)  # a killed writer's leftovers, as large as a checkpoint
            result = _train_in(cfg, run_dir, trainer, state, path, data, say, handle_signals, started)
    except BaseException as exc:
        if new_folder is not None and not started:
            shutil.rmtree(new_folder, ignore_errors=True)  # a failed start leaves nothing behind
        elif run_dir.is_dir():
            try:
                write_status(
                    run_dir, _ending(exc), trainer.step, failure_reason(exc), trainer.divergence, hook_status(trainer)
                )
            except OSError as again:  # a full disk: the run's own error is the one to report
                log.warning("could not write %s: %s", run_dir / STATUS, reason(again))
        raise
    finally:
        clear_stop()  # a stop request ends this run only, not later work in the same process
    ending = "completed" if result.completed else "interrupted"
    write_status(run_dir, ending, result.step, "", trainer.divergence, hook_status(trainer))
    return result


def _prepare_run(
    cfg: Config, run_dir: str | Path | None, resume: str | Path | None, say: Announce
) -> tuple[Path, Path | None, dict[str, Any] | None]:
    """The run folder, the checkpoint to resume (and its state), all checked before anything is written."""
    run_dir = Path(run_dir) if run_dir is not None else None
    path = find_resume(resume, run_dir)
    if resume == "auto" and path is None:
        say("--resume auto: no checkpoint found; starting a new run")
    state = load_checkpoint(path) if path is not None else None
    if state is not None:
        check_resume_compatible(cfg, state, path)
    run_dir = run_dir or (_run_dir_for(path) if path else _new_run_dir(Path("runs")))
    _check_run_dir(run_dir, path, state)
    check_eval_inputs(cfg)  # e.g. a missing Inception file: before any folder is made or any minute is spent
    return run_dir, path, state


def _on_main(
    prepare: Callable[[], tuple[Path, Path | None, dict[str, Any] | None]],
) -> tuple[Path, Path | None, dict[str, Any] | None]:
    """``prepare()`` on rank 0 only; every rank learns the run folder and checkpoint it chose, or its UserError
    (raised on every rank, so that all processes of a torchrun launch exit with the same one-line message). The
    other ranks get no state: they load the checkpoint themselves."""
    if not distributed.active():
        return prepare()
    result: tuple[Path, Path | None, dict[str, Any] | None] | None = None
    error: UserError | None = None
    if distributed.is_main():
        try:
            result = prepare()
        except UserError as exc:
            error = exc
    run_dir, path, error = distributed.broadcast((result[0], result[1], None) if result else (None, None, error))
    if error is not None:
        raise error
    return run_dir, path, result[2] if result else None


def _train_worker(trainer: Trainer, run_dir: Path, path: Path | None, handle_signals: bool) -> RunResult:
    """A rank other than 0: it trains its shard of every batch and writes nothing (no hooks, no folder)."""
    with _stop_on_signals(handle_signals):
        trainer.fit()
    return RunResult(run_dir, trainer.step, trainer.completed, path, [])


def failure_reason(exc: BaseException) -> str:
    """What status.json says about the error that ended a run: its one line, as the CLI prints it."""
    return storage_problem(exc) or one_line(exc)


def _ending(exc: BaseException) -> str:
    if isinstance(exc, DivergedError):
        return "diverged"
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


STATUS = "status.json"


def hook_status(trainer: Trainer) -> dict[str, Any]:
    """What the hooks add to status.json (the fid hook: ``evaluation``, the images and features behind eval/*)."""
    out: dict[str, Any] = {}
    for hook in trainer.hooks:
        out.update(hook.status())
    return out


def write_status(
    run_dir: Path,
    status: str,
    step: int,
    reason: str = "",
    divergence: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """``<run>/status.json``: how the run ended (completed, interrupted, diverged or failed), at which step, why;
    ``divergence`` ({step, reason} of the first divergence signal, also when hooks.stability.stop let the run go on,
    else null), ``final``: the last logged value of every ``eval/*`` and ``stability/*`` tag, and the hooks'
    ``extra`` entries (``evaluation``: extractor, weights, protocol and the number of images of each domain)."""
    final = {
        tag: value
        for tag, (_, value) in last_values(run_dir / "scalars.jsonl").items()
        if tag.startswith(("eval/", "stability/"))
    }
    payload = {
        "status": status,
        "step": int(step),
        "reason": reason,
        "divergence": divergence,
        "final": final,
        **(extra or {}),
        "time": time.time(),
    }
    tmp = run_dir / f".{STATUS}.tmp"
    tmp.write_text(json.dumps(payload) + "\n", encoding="utf-8")
    tmp.replace(run_dir / STATUS)


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's status.json ({} when it has none or it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _train_in(
    cfg: Config,
    run_dir: Path,
    trainer: Trainer,
    state: dict[str, Any] | None,
    path: Path | None,
    data: DataBundle,
    say: Announce,
    handle_signals: bool,
    started: list[bool],
) -> RunResult:
    start = trainer.step if state is not None else None
    with _run_log(run_dir):
        for note in data.notes:  # each file the data left out (data.skip_bad_images), before this log existed
            log.info("data.skip_bad_images: skipped %s", note)
        if state is not None:
            log.info("resumed at step %d from %s", trainer.step, path)
        # Events up to the checkpoint step were logged before it was saved; later ones belong to the lost tail. A new
        # run in a folder that an earlier attempt logged into (without checkpoints) starts both logs afresh.
        earlier = (run_dir / "scalars.jsonl").exists() or has_events(run_dir)
        purge = trainer.step + 1 if state is not None else (0 if earlier else None)
        writer = RunWriter(run_dir, purge_step=purge, deferred=True)
        try:
            trainer.hooks = build_hooks(cfg, writer, run_dir, has_paired=data.paired is not None)
            if state is not None:
                trainer.load_hook_states(state.get("hooks", {}))
            # Every check has passed: only now is config.yaml replaced and the interrupted tail purged.
            _write_config(cfg, run_dir, start)
            writer.open()
            say(f"run dir: {run_dir}  (charts: {tensorboard_command(run_dir.parent)})")
            hparams = _log_run_info(cfg, writer, run_dir, trainer.step, has_paired=data.paired is not None)
            with _stop_on_signals(handle_signals):
                started.append(True)
                try:
                    trainer.fit()
                except Exception:
                    _write_hparams(run_dir, hparams, success=False)  # diverged or failed
                    raise
            if trainer.completed:
                _write_hparams(run_dir, hparams, success=trainer.divergence is None)
        finally:
            writer.close()
    saved = latest(run_dir / "checkpoints")
    where = f"checkpoints in {run_dir / 'checkpoints'}" if saved else "no checkpoint was written (no step completed)"
    summary = [f"finished at step {trainer.step}; {where}"]
    for hook in trainer.hooks:
        summary += hook.summary()
    return RunResult(run_dir, trainer.step, trainer.completed, path, summary)


def _log_run_info(cfg: Config, writer: RunWriter, run_dir: Path, step: int, has_paired: bool) -> list[Summary]:
    """The resolved config as TensorBoard text, and the run's hparams (session start; for a run outside a study its
    own experiment too: a sweep writes the study's, see gan.sweep). Returns those hparams summaries."""
    text = "\n".join(f"    {line}" for line in dump_config(cfg).splitlines())  # a Markdown code block
    writer.text("config", text, step)
    hparams = run_hparams(cfg)
    summaries = []
    if not cfg.study.name:
        # Values without discrete domains: several single runs under one logdir must not filter each other out.
        domains = {name: [value] for name, value in hparams.items()}
        summaries.append(experiment_summary(domains, hparam_metrics(cfg, has_paired), discrete=False))
    summaries.append(session_start_summary(hparams, group=run_dir.parent.name if cfg.study.name else ""))
    _write_hparams(run_dir, summaries, success=None)
    return summaries


def _write_hparams(run_dir: Path, summaries: list[Summary], success: bool | None) -> None:
    """The hparams summaries in their own event file of the run's event folder, replaced on every write: a resumed
    or restarted run shows its latest session (TensorBoard keeps the first value of a tag it reads, so an old FAILURE
    in the main event file would stay). ``success`` None: running (no session end yet)."""
    ends = [] if success is None else [session_end_summary(success)]
    write_summaries(event_folder(run_dir), [*summaries, *ends], ".hparams")


# ------------------------------------------------------------------------------------------------ trained models
def load_generator(
    checkpoint: str | Path, device: str | torch.device = "cpu", ema: bool = True
) -> tuple[nn.Module, LabelSpace]:
    """The generator of a checkpoint (its EMA copy if present and ``ema``) in eval mode, and the label convention
    to condition it with: ``G(x, space.vectors(space.toward(labels, d)))`` translates ``x`` into domain d."""
    G, cfg, state = load_generator_state(Path(checkpoint), torch.device(device), ema)
    return G, label_space(cfg, state)


def load_generator_state(
    checkpoint: Path, device: torch.device, ema: bool = True
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Like :func:`load_generator`, with the checkpoint's config and whole state."""
    state = load_checkpoint(checkpoint)
    G, cfg = generator_from_state(state, str(checkpoint), ema)
    return G.to(device).eval(), cfg, state


def label_space(cfg: Config, state: dict[str, Any]) -> LabelSpace:
    """The label convention a checkpoint was trained with (its domains, label kind and exclusive groups)."""
    return build_label_space(cfg, list(state["domains"]), bool(state.get("multi_label")))


def checkpoint_data(cfg: Config, state: dict[str, Any], checkpoint: Path) -> DataBundle:
    """The run's data, unflipped, checked against the domains the checkpoint was trained on."""
    data = build_data(cfg.data, train_flip=False)
    if list(data.domains) != list(state["domains"]):
        raise DataError(f"{checkpoint}: trained on domains {state['domains']}, the data now has {data.domains}")
    return data


def run_classifier(
    checkpoint: Path,
    space: LabelSpace,
    image_size: int,
    device: torch.device,
    path: Path | None = None,
    required: bool = False,
) -> nn.Module | None:
    """The domain classifier (``path`` or ``<run>/classifier.pt``), checked against the run's domains, label kind
    and image size; None when absent and not ``required`` (then domain accuracy is not measured)."""
    path = path or classifier_path(run_dir_of(checkpoint))
    if not path.is_file() and not required:
        log.info("no domain classifier at %s: domain accuracy not measured (evaluate.py train-classifier)", path)
        return None
    model, meta = load_classifier(path, device)
    check_classifier_fits(path, meta, list(space.domains), image_size, space.multi_label)
    log.info("domain classifier %s: held-out accuracy %.4f", path, meta["report"].get("heldout_accuracy", float("nan")))
    return model


def evaluate_checkpoint(
    checkpoint: str | Path,
    metrics: dict[str, Any] | None = None,
    *,
    metric: str = "fid",
    num_images: int | None = None,
    ema: bool = True,
    device: str | torch.device = "auto",
    classifier: Path | None = None,
    extractor: str | None = None,
    cache: bool = True,
    progress: bool = False,
) -> tuple[TranslationScores, int]:
    """FID/KID/accuracy of a checkpoint's translations per target domain and its step: what the run's fid hook logs
    for this checkpoint (the same images, classifier, extractor choice and fallback, numbers of images; both use
    gan.build.evaluation_parts), plus paired L1/PSNR at ``hooks.paired_l1.num_images`` as that hook does.

    ``metric="accuracy"`` measures only the domain accuracy; ``extractor`` is ``inception``, ``classifier`` or
    ``auto`` (default: the run's ``hooks.fid.extractor``); ``classifier`` a classifier file to use instead of the
    run's. ``metrics`` replaces ``metrics.*`` values of the stored config (e.g. ``{"protocol": "tf1"}``; None values
    keep the stored ones). Nothing is written into the run folder (a missing classifier comes from, or is trained
    into, the shared classifier cache)."""
    checkpoint = Path(checkpoint)
    dev = pick_device(device) if isinstance(device, str) else device
    G, cfg, state = load_generator_state(checkpoint, dev, ema)
    if metrics:
        cfg = with_metric_options(cfg, **metrics)
    data = checkpoint_data(cfg, state, checkpoint)
    n = cfg.hooks.fid.num_images if num_images is None else num_images
    if n < (1 if metric == "accuracy" else 2):
        raise UserError(
            f"--num-images: {metric} needs at least {1 if metric == 'accuracy' else 2} images per domain, got {n}"
        )
    problem = sample_shortfall(data, n, None if metric == "accuracy" else cfg.metrics.real_split)
    if problem is not None:
        raise DataError(f"{checkpoint}: {problem}")
    run_dir = run_dir_of(checkpoint)
    feats = reals = None
    if metric == "accuracy":
        if classifier is not None:
            model = run_classifier(checkpoint, data.space, cfg.data.image_size, dev, classifier, required=True)
        else:
            model = obtain_classifier(run_dir, data, cfg, dev, progress, lambda: build_data(cfg.data), keep=False)[0]
    else:
        model, feats, reals = evaluation_parts(
            cfg,
            data,
            dev,
            run_dir,
            kind=extractor,
            count=n,
            cache=cache,
            progress=progress,
            keep=False,
            train_data=lambda: build_data(cfg.data),  # the classifier trains with the training run's flips
            classifier_file=classifier,
        )
    m = cfg.metrics
    scores = evaluate_translations(
        G,
        data,
        feats,
        reals,
        dev,
        n,
        model,
        m.kid_subsets,
        m.kid_subset_size,
        m.batch_size,
        paired_images=cfg.hooks.paired_l1.num_images,
        progress=progress,
    )
    return scores, int(state["step"])


def load_config_of(checkpoint: Path) -> tuple[Config, dict[str, Any]]:
    """A checkpoint's config and state (for commands that rebuild its data)."""
    state = load_checkpoint(checkpoint)
    return config_of_state(state, str(checkpoint)), state


# --------------------------------------------------------------------------------------------- image folders
def metric_config(**metrics: Any) -> Config:
    """The default config with ``metrics.*`` options set (None values keep the defaults), validated as config."""
    cfg = with_metric_options(Config(), **metrics)
    return load_run_config(base=config_to_dict(cfg), base_name="command line", training=False)


def _need_two(path: Path, count: int) -> None:
    if count < 2:
        raise DataError(f"{path}: {count} image; FID and KID need at least 2")


def _check_folders(*paths: Path) -> None:
    """Missing folders, folders of fewer than 2 images and unreadable or mis-shaped ``.npz`` statistics are refused
    before the Inception network is loaded."""
    for path in paths:
        if path.suffix.lower() != ".npz":
            _need_two(path, len(list_images(path)))
            continue
        mu = load_stats(path)[0]
        if mu.shape[0] != FEATURE_DIM:
            raise DataError(f"{path}: {mu.shape[0]}-d statistics, but the FID features are {FEATURE_DIM}-d")


def path_statistics(path: Path, extractor: Any, batch_size: int) -> tuple[Any, Any, int | None]:
    """(mu, sigma, number of images) of a folder, or of a pytorch-fid .npz file (its image count is unknown)."""
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


def folder_fid(paths: list[Path], cfg: Config, device: torch.device) -> dict[str, Any]:
    """FID between two folders (or pytorch-fid ``.npz`` statistics), with the extractor's description."""
    _check_folders(*paths)
    extractor = inception_extractor(cfg, device)
    stats = [path_statistics(path, extractor, cfg.metrics.batch_size) for path in paths]
    value = frechet_distance(*stats[0][:2], *stats[1][:2])
    return {"fid": value, "paths": [str(p) for p in paths], "num_images": [s[2] for s in stats], **extractor.info}


def save_folder_stats(folder: Path, out: Path, cfg: Config, device: torch.device, force: bool) -> dict[str, Any]:
    """Write a folder's statistics in pytorch-fid's ``.npz`` format (an existing file only with ``force``)."""
    if out.suffix.lower() != ".npz":
        raise UserError(f"{out}: --save-stats writes a .npz file; give FOLDER OUT.npz")
    if out.exists() and not force:
        raise UserError(f"{out}: exists; pass --force to replace it")
    _check_folders(folder)
    extractor = inception_extractor(cfg, device)
    features = folder_features(extractor, folder, cfg.metrics.batch_size, progress=True)
    _need_two(folder, len(features))
    meta = {k: v for k, v in extractor.info.items() if isinstance(v, (str, int, float))}
    save_stats(out, *feature_statistics(features), meta={**meta, "count": len(features), "source": str(folder)})
    return {"stats": str(out), "num_images": len(features), **extractor.info}


def folder_kid(paths: list[Path], cfg: Config, device: torch.device) -> dict[str, Any]:
    """KID between two folders (torch-fidelity's defaults, the subset size capped at the images available)."""
    if any(p.suffix.lower() == ".npz" for p in paths):
        raise UserError("kid: needs the images (features), not .npz statistics")
    m = cfg.metrics
    _check_folders(*paths)
    extractor = inception_extractor(cfg, device)
    f1, f2 = (folder_features(extractor, p, m.batch_size, progress=True) for p in paths)
    for path, features in zip(paths, (f1, f2)):
        _need_two(path, len(features))
    size = min(m.kid_subset_size, len(f1), len(f2))
    if size < m.kid_subset_size:
        log.warning("kid: subset size %d capped at the %d images available", m.kid_subset_size, size)
    mean, std = kernel_inception_distance(f1, f2, subsets=m.kid_subsets, subset_size=size)
    return {
        "kid_mean": mean,
        "kid_std": std,
        "subsets": m.kid_subsets,
        "subset_size": size,
        "paths": [str(p) for p in paths],
        "num_images": [len(f1), len(f2)],
        **extractor.info,
    }


# ------------------------------------------------------------------------------------------------- translating
# translate --size: G is fully convolutional (gan.models.generator), so it also runs at sizes it was not trained at,
# within limits set by its architecture and by memory.
SIZE_MULTIPLE = 4  # two stride-2 convs down, two transposed convs up: other sides come back cut (a 30 px side as 28)
MIN_SIDE = 8  # a 4x4 input leaves a 1x1 bottleneck, where instance norm (the default) has no statistics to use
MAX_PIXELS = 2048 * 2048  # measured on a 2-core CPU: 1.9 GB and 13 s for the default G (conv_dim 32), ~4 GB at 64
MAX_SIDE = 2048  # the largest --size N (shorter side) that a square image can have within MAX_PIXELS
SIZES = f"model, input or a multiple of {SIZE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE} (the shorter side)"


def translate_size(size: str | int) -> str | int:
    """``--size`` checked: ``"model"``, ``"input"``, or the shorter side in pixels (an int, or its text)."""
    text = str(size).strip()
    if text in ("model", "input"):
        return text
    side = int(text) if text.isascii() and text.isdigit() and not isinstance(size, bool) else 0
    if not MIN_SIDE <= side <= MAX_SIDE or side % SIZE_MULTIPLE:
        raise UserError(f"--size: expected {SIZES}, got {size!r}")
    return side


def working_size(width: int, height: int, size: str | int) -> tuple[int, int]:
    """(width, height) G runs at for a ``width`` x ``height`` image under ``--size input`` (its own size) or
    ``--size N`` (shorter side N, aspect ratio kept): each side rounded to the nearest multiple of 4, at least 8."""
    scale = 1.0 if size == "input" else int(size) / min(width, height)
    return _round_side(width * scale), _round_side(height * scale)


def _round_side(side: float) -> int:
    return max(MIN_SIDE, SIZE_MULTIPLE * int(side / SIZE_MULTIPLE + 0.5))  # halves round up: 30 -> 32, 26 -> 28


def _working_sizes(inputs: list[Path], size: str | int) -> list[tuple[int, int]]:
    """The size each input is translated at (read from the file headers), every one checked against MAX_PIXELS
    before any image is decoded or written."""
    sizes = [working_size(*image_dimensions(path), size) for path in inputs]
    for path, (width, height) in zip(inputs, sizes):
        if width * height > MAX_PIXELS:
            raise UserError(
                f"--size {size}: {path} would be translated at {width}x{height} = {width * height / 1e6:.1f} Mpixel, "
                f"above the limit of {MAX_PIXELS / 1e6:.1f} Mpixel ({MAX_SIDE}x{MAX_SIDE}); give a smaller --size N"
            )
    return sizes


def _output_is_file(inputs: list[Path], targets: list[str], out: Path) -> bool:
    """Whether ``out`` is the one output image file, rather than a folder of ``<stem>_to_<target>.png`` files: an
    image suffix names a file, which only one input and one target can fill."""
    is_file = out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()
    count = len(inputs) * len(targets)
    if is_file and count > 1:
        raise UserError(
            f"--out {out}: names an image file, but {len(inputs)} input image(s) x {len(targets)} target(s) make "
            f"{count} outputs; several outputs need a folder (an --out without an image suffix)"
        )
    if not is_file and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; name a folder, or an image file (e.g. out.png)")
    return is_file


def translate_files(
    checkpoint: Path,
    inputs: list[Path],
    targets: list[str],
    out: Path,
    device: torch.device,
    ema: bool = True,
    labels: str | None = None,
    progress: bool = True,
    size: str | int = "model",
    force: bool = False,
) -> int:
    """Translate image files into the ``targets`` (``--to`` texts, see gan.labels) and save PNGs; returns the
    number written. Multi-label models need the inputs' own attributes: ``labels`` (comma-separated names) or,
    without it, the run's domain classifier predicts them. ``size``: ``"model"`` crops and resizes each input as
    the training data was; ``"input"`` or a shorter side N keep the whole image (see :func:`working_size`)."""
    size = translate_size(size)
    single = _output_is_file(inputs, targets, out)  # before anything is read
    outputs = _translation_outputs(inputs, targets, out, single, force)
    for path in inputs:  # every input decodes (gan.data's one rule), before a model is loaded or a folder made
        problem = unreadable(path)
        if problem is not None:
            raise DataError(problem)
    G, cfg, state = load_generator_state(checkpoint, device, ema)
    space = label_space(cfg, state)
    if labels is not None and not space.multi_label:
        raise UserError(f"--labels: {checkpoint} is a single-label model (its domains are exclusive); leave it out")
    if space.multi_label:
        for spec in targets:  # refuse unknown names before reading any image
            space.parse(spec, torch.zeros(space.num_domains))
    else:
        parsed = [space.parse(spec) for spec in targets]
    classifier = None
    if space.multi_label and labels is None:
        classifier = run_classifier(checkpoint, space, cfg.data.image_size, device, required=False)
        if classifier is None:
            raise UserError(
                f"{checkpoint}: a multi-label model keeps the attributes the input has; give them with --labels "
                "(e.g. --labels Male,Young, or --labels none) or train the run's classifier (evaluate.py "
                "train-classifier) to predict them"
            )
    given = space.parse_attributes(labels) if labels is not None else None
    sizes = _working_sizes(inputs, size) if size != "model" else None
    if single:
        out.parent.mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
    model_input = image_transform(cfg.data.image_size, cfg.data.crop_size)  # what the model and classifier saw
    written = 0
    for k, path in enumerate(tqdm(inputs, desc="translate", unit="img", disable=not progress or len(inputs) < 2)):
        image = load_rgb(path)
        x = (model_input(image) if sizes is None else resize_transform(*sizes[k])(image)).unsqueeze(0).to(device)
        source = given
        if space.multi_label and source is None:
            seen = x if sizes is None else model_input(image).unsqueeze(0).to(device)
            with evaluating(classifier):
                source = space.one_per_group(classifier(seen)[0].cpu())  # the attributes it sees in the input
        for i, spec in enumerate(targets):
            label = space.parse(spec, source) if space.multi_label else parsed[i]
            with torch.no_grad():
                y = G(x, space.vectors(label.unsqueeze(0)).to(device))
            save_image((y + 1) / 2, outputs[k * len(targets) + i])
            written += 1
    return written


def _translation_outputs(inputs: list[Path], targets: list[str], out: Path, single: bool, force: bool) -> list[Path]:
    """The output file of every (input, target), input-major: ``out`` itself, or ``<name>_to_<target>.png`` in the
    folder ``out`` (``name``: the input's stem, or its whole name where two inputs share a stem). Two outputs on one
    file, or an existing file without ``force``, are refused before anything is read."""
    if single:
        outputs = [out]
    else:
        stems = [p.stem for p in inputs]
        names = [p.stem if stems.count(p.stem) == 1 else p.name for p in inputs]  # a.png, a.jpg: both kept
        outputs = [out / f"{name}_to_{spec.replace(',', '+')}.png" for name in names for spec in targets]
    seen: dict[Path, int] = {}
    for k, path in enumerate(outputs):
        first = seen.setdefault(path, k)
        if first != k:
            a, b = divmod(first, len(targets)), divmod(k, len(targets))
            raise UserError(
                f"--out: {inputs[a[0]].name} to {targets[a[1]]} and {inputs[b[0]].name} to {targets[b[1]]} would both "
                f"be written to {path.name}; give each --to once"
            )
    existing = [p for p in outputs if p.exists()]
    if existing and not force:
        raise UserError(
            f"--out: {existing[0]} exists ({len(existing)} of {len(outputs)} outputs); add --force to overwrite"
        )
    for path in outputs:  # a folder, pipe or read-only file where an output goes: one line, before any work
        check_output_file(path, "--out", force=True, hint="remove it or give another --out")
    return outputs


def input_files(path: Path) -> list[Path]:
    """An image file, or the images directly in a folder (gan.data's suffix list)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return list_images(path)
    kind = special_file(path)
    raise DataError(f"{path}: is {kind}, not an image file or folder" if kind else f"{path}: no such file or folder")


def paired_l1_of(checkpoint: Path, device: torch.device, num_images: int | None = None) -> dict[str, Any]:
    """Paired L1 and PSNR of a checkpoint's translations against the synthetic data's ground truth, over
    ``num_images`` held-out sources (default: the run's ``hooks.paired_l1.num_images``, as its eval/paired_l1)."""
    G, cfg, state = load_generator_state(checkpoint, device)
    if num_images is None:
        num_images = cfg.hooks.paired_l1.num_images
    data = build_data(cfg.data, train_flip=False)
    if data.paired is None:
        raise UserError(f"{checkpoint}: paired-l1 needs the synthetic dataset (data.source: {cfg.data.source})")
    value, psnr = paired_scores(G, data.paired, device, num_images)
    n = min(num_images, len(data.paired.labels))
    return {"paired_l1": value, "paired_psnr": psnr, "step": int(state["step"]), "num_images": n}


def train_checkpoint_classifier(
    checkpoint: Path, device: torch.device, out: Path | None = None, steps: int | None = None
) -> tuple[Path, Any]:
    """Train (or replace) the domain classifier of a checkpoint's run on its real training images."""
    cfg, state = load_config_of(checkpoint)
    data = build_data(cfg.data, train_flip=True)
    model, report = fit_classifier(cfg, data, device, steps, progress=True)
    path = out or classifier_path(run_dir_of(checkpoint))
    save_classifier(path, model, report, data.domains, {**classifier_provenance(cfg), "explicit": True})
    return path, report
