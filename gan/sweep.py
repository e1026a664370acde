"""Studies: a sweep file (settings x grid x seeds) expanded into one training run per (cell, seed), run by local
worker processes or printed as one self-contained ``train.py`` command per run for a cluster's scheduler.

A sweep file (validated as strictly as configs; every run's config is validated before anything starts)::

    name: sn_robustness              # study folder runs/<name>/ (or --run-dir)
    configs: [configs/default.yaml]  # base config files of every run (relative to the working directory)
    set: {train.steps: 1500}         # overrides of every run
    grid:                            # full factorial over these config keys
      model.discriminator.spectral_norm.enabled: [true, false]
      loss.lambda_gp: [0.0, 10.0]
    settings:                        # optional named groups of overrides, crossed with the grid
      A: {train.g_lr: 1.0e-4, train.n_critic: 5}
    seeds: [0, 1, 2]                 # train.seed of each repetition

Runs live in ``<study>/<cell>/seed<k>/``; ``<study>/sweep.yaml`` keeps the expanded plan. Each run's ``status.json``
(written by gan.run.train) says how it ended; running the sweep again skips completed and diverged runs and resumes
the others.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from gan.build import load_run_config
from gan.config import read_yaml
from gan.errors import ConfigError
from gan.run import read_status

log = logging.getLogger(__name__)

SWEEP_KEYS = ("name", "configs", "set", "grid", "settings", "seeds")
FINAL = ("completed", "diverged")  # a run that ended like this is not run again


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a study: its cell, seed, folder and the overrides that make its config."""

    cell: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]  # section.key=value, in order: the sweep's set, the setting, the grid values, seed
    varied: dict[str, Any] = field(default_factory=dict)  # the grid/setting values that tell the cell apart

    def command(self, configs: Sequence[str], python: str = "python", script: str = "train.py") -> list[str]:
        """A self-contained command line: re-running it continues the run (``--resume auto``)."""
        args = [python, script]
        for path in configs:
            args += ["--config", str(path)]
        for text in self.overrides:
            args += ["--set", text]
        return [*args, "--run-dir", str(self.run_dir), "--resume", "auto"]


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    configs: tuple[str, ...]
    runs: tuple[PlannedRun, ...]
    study_dir: Path

    def plan(self) -> dict[str, Any]:
        """The expanded plan, as written to ``<study>/sweep.yaml``."""
        return {
            "name": self.name,
            "source": str(self.path),
            "configs": list(self.configs),
            "runs": [
                {"cell": r.cell, "seed": r.seed, "run_dir": str(r.run_dir), "overrides": list(r.overrides)}
                for r in self.runs
            ],
        }


# ---------------------------------------------------------------------------------------------------- loading
def _yaml_text(value: Any) -> str:
    """A value as ``--set`` text that reads back to the same value (YAML flow style, one line)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").strip()


def _value_name(value: Any) -> str:
    """A short, file-system-safe rendering of a grid value for a cell name."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = format(value, "g")
    else:
        text = str(value) if not isinstance(value, (dict, list)) else _yaml_text(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each key by its last dotted parts, as few as keep them apart (``lambda_gp``, ``spectral_norm.enabled``)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            short = ".".join(parts[-n:])
            if sum(1 for other in keys if other.split(".")[-n:] == parts[-n:]) == 1:
                break
        out[key] = short
    return out


def _mapping(data: Any, what: str, path: Path) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: {what}: expected a mapping of config keys to values, got {data!r}")
    return dict(data)


def load_sweep(path: str | Path, study_dir: str | Path | None = None, extra: Sequence[str] = ()) -> Sweep:
    """Read and expand a sweep file; every run's config is validated (one line naming the file and key)."""
    path = Path(path)
    data = read_yaml(path)
    unknown = [key for key in data if key not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; a sweep file has: {', '.join(SWEEP_KEYS)}")
    name = str(data.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(f"{path}: name: {name!r} must be a folder name (letters, digits, . _ -)")
    configs = data.get("configs") or []
    if not isinstance(configs, list) or not all(isinstance(c, str) for c in configs):
        raise ConfigError(f"{path}: configs: expected a list of config file paths, got {configs!r}")
    common = _mapping(data.get("set"), "set", path)
    grid = _mapping(data.get("grid"), "grid", path)
    settings = _mapping(data.get("settings"), "settings", path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid: {key}: expected a non-empty list of values, got {values!r}")
    for label, group in settings.items():
        _mapping(group, f"settings: {label}", path)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", str(label)):
            raise ConfigError(f"{path}: settings: {label!r} must be a folder-name-safe label")
    if not grid and not settings:
        raise ConfigError(f"{path}: grid: empty: name at least one config key with its values (or settings)")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: seeds: expected a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds: {seeds!r} repeats a seed")
    study = Path(study_dir) if study_dir is not None else Path("runs") / name
    runs = _expand(path, common, grid, settings, seeds, study, list(extra))
    sweep = Sweep(name, path, tuple(configs), tuple(runs), study)
    _validate(sweep, path)
    return sweep


def _expand(
    path: Path,
    common: dict[str, Any],
    grid: dict[str, list[Any]],
    settings: dict[str, dict[str, Any]],
    seeds: list[int],
    study: Path,
    extra: list[str],
) -> list[PlannedRun]:
    short = _short_names(list(grid))
    labels: list[str | None] = list(settings) or [None]
    runs, seen = [], {}
    for label in labels:
        for values in itertools.product(*grid.values()):
            chosen = dict(zip(grid, values))
            parts = ([f"setting={label}"] if label is not None else []) + [
                f"{short[k]}={_value_name(v)}" for k, v in chosen.items()
            ]
            cell = "+".join(parts)
            overrides = {**common, **(settings[label] if label is not None else {}), **chosen}
            signature = json.dumps(overrides, sort_keys=True, default=str)
            if cell in seen or signature in seen.values():
                raise ConfigError(f"{path}: duplicate cell {cell!r} (the same values twice in the grid or settings)")
            seen[cell] = signature
            texts = [f"{k}={_yaml_text(v)}" for k, v in overrides.items()]
            varied = {**({"setting": label} if label is not None else {}), **chosen}
            for seed in seeds:
                runs.append(
                    PlannedRun(cell, seed, study / cell / f"seed{seed}", (*texts, *extra, f"train.seed={seed}"), varied)
                )
    return runs


def _validate(sweep: Sweep, path: Path) -> None:
    """Every run's config must load; an error names the sweep file and the run's cell."""
    checked: set[tuple[str, ...]] = set()
    for run in sweep.runs:
        key = run.overrides[:-1]  # the seed does not change what is valid
        if key in checked:
            continue
        checked.add(key)
        try:
            load_run_config(list(sweep.configs), list(run.overrides))
        except ConfigError as exc:
            raise ConfigError(f"{path}: cell {run.cell}: {exc}") from None


# ---------------------------------------------------------------------------------------------------- running
def run_status(run: PlannedRun) -> str:
    """``completed``, ``diverged``, ``failed``, ``interrupted`` (from the run's status.json) or ``pending``."""
    status = read_status(run.run_dir)
    return status.get("status", "pending") if status else "pending"


def write_plan(sweep: Sweep) -> Path:
    sweep.study_dir.mkdir(parents=True, exist_ok=True)
    target = sweep.study_dir / "sweep.yaml"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(yaml.safe_dump(sweep.plan(), sort_keys=False), encoding="utf-8")
    tmp.replace(target)
    return target


def threads_per_worker(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def run_sweep(
    sweep: Sweep,
    workers: int = 1,
    runner: Callable[[PlannedRun, int], int] | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Run every run that has not ended as completed or diverged, ``workers`` at a time, each in its own process
    with ``cores // workers`` threads. A run that fails or diverges is recorded (its status.json) and the sweep goes
    on. Returns {run folder: status} after the sweep."""
    if workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {workers}")
    write_plan(sweep)
    todo = [run for run in sweep.runs if run_status(run) not in FINAL]
    threads = threads_per_worker(workers)
    start = runner or (lambda run, n: _run_process(sweep, run, n))
    with tqdm(total=len(sweep.runs), initial=len(sweep.runs) - len(todo), desc=sweep.name, unit="run",
              disable=not progress) as bar:  # fmt: skip
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for run, code in zip(todo, pool.map(lambda r: (r, start(r, threads))[1], todo)):
                status = run_status(run)
                if status == "pending":  # the process died before train() could say how it ended
                    log.warning("%s: exited with code %d without a status", run.run_dir, code)
                bar.update(1)
    return {str(run.run_dir): run_status(run) for run in sweep.runs}


def _run_process(sweep: Sweep, run: PlannedRun, threads: int) -> int:
    """One run as a child process (``python -m gan.cli``, the command ``--print-commands`` shows), its output in
    ``<run>/sweep.log``."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "gan.cli", *run.command(sweep.configs)[2:], "--set", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    with open(run.run_dir / "sweep.log", "a", encoding="utf-8") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    log.info("%s: exit code %d after %.1f s", run.run_dir, code, time.perf_counter() - started)
    return code


def print_commands(sweep: Sweep) -> list[str]:
    """One shell line per run (quoted), for a scheduler: e.g. line $SLURM_ARRAY_TASK_ID of this list."""
    return [shlex.join(run.command(sweep.configs)) for run in sweep.runs]
