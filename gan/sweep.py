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

``settings`` may instead hold several named axes, crossed with each other and the grid (cell names
``constraint=sn+adam=A+...``)::

    settings:
      constraint: {sn: {loss.lambda_gp: 0.0}, gp: {model.discriminator.spectral_norm.enabled: false}}
      adam: {A: {train.d_lr: 1.0e-4}, D: {train.d_lr: 1.0e-3}}

(a group whose keys are all dotted config keys is one named setting; one whose values are all such groups is an axis).
``{study}`` in a text value stands for the study folder, e.g. ``metrics.classifier.path: "{study}/classifier.pt"``:
one domain classifier trained once and shared by every run of the study.

Runs live in ``<study>/<cell>/seed<k>/``; ``<study>/sweep.yaml`` keeps the expanded plan. Each run's ``status.json``
(written by gan.run.train) says how it ended; running the sweep again skips completed and diverged runs and resumes
the others.
"""

from __future__ import annotations

import dataclasses
import difflib
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

from gan.build import hparam_metrics, load_run_config, run_hparams
from gan.config import config_keys, read_yaml
from gan.errors import ConfigError
from gan.hparams import experiment_summary
from gan.run import read_status
from gan.writers import write_summaries

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
    hparams: dict[str, list[Any]] = field(default_factory=dict)  # every hparam with the values the runs give it
    metrics: tuple[str, ...] = ()  # the metric tags of the study's HPARAMS tab

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
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()


def _value_name(value: Any) -> str:
    """A short, file-system-safe rendering of a grid value for a cell name."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = format(value, "g").replace("e+", "e")  # 1e+06 -> 1e06: "+" separates the parts of a cell name
    else:
        text = str(value) if not isinstance(value, (dict, list)) else _yaml_text(value)
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"


def short_names(keys: list[str]) -> dict[str, str]:
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
    axes = _setting_axes(settings, path)
    groups = [("set", common), ("grid", grid)] + [
        (f"settings: {axis}: {label}", group) for axis, labelled in axes.items() for label, group in labelled.items()
    ]
    _check_keys(path, groups)
    if not grid and not settings:
        raise ConfigError(f"{path}: grid: empty: name at least one config key with its values (or settings)")
    for where, group in groups:
        if "train.seed" in group:  # every run's seed comes from seeds: a seed set elsewhere would be overridden
            raise ConfigError(f"{path}: {where}: train.seed: give the seeds as seeds: [0, 1, 2], not as a setting")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: seeds: expected a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds: {seeds!r} repeats a seed")
    study = Path(study_dir) if study_dir is not None else Path("runs") / name
    runs = _expand(path, common, grid, axes, seeds, study, list(extra))
    sweep = Sweep(name, path, tuple(configs), tuple(runs), study)
    return _validate(sweep, path)


def _safe_label(label: Any, where: str, path: Path) -> str:
    if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", label):
        raise ConfigError(f"{path}: {where}: {label!r} must be a folder-name-safe label (letters, digits, . _ -)")
    return label


def _config_key(key: str, known: set[str]) -> str | None:
    """The config key that ``key`` sets: itself, or for a key inside a free-form mapping
    (``model.generator.norm_options.affine``) that mapping's key; None if it is no config key."""
    if key in known:
        return key
    parent = next((k for k in known if k.endswith(("_options", ".labels")) and key.startswith(f"{k}.")), None)
    return parent


def _check_keys(path: Path, sections: list[tuple[str, dict[str, Any]]]) -> None:
    """Every key a sweep sets must be a config key (caught here, before it reaches another cell's study.hparams)."""
    known = set(config_keys())
    for where, values in sections:
        for key in values:
            if not _config_key(key, known):
                hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"{path}: {where}: unknown key {key!r}{extra}")


def _setting_axes(settings: dict[str, Any], path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``settings`` as named axes {axis: {label: overrides}}: one axis called ``setting`` for the flat form."""

    known = set(config_keys())

    def is_group(value: Any) -> bool:
        """A named setting: a mapping of keys to config values (a mapping value only under a config key such as
        ``..._options``); an axis maps labels (which may contain dots: ``"0.5"``) to such groups."""
        return isinstance(value, dict) and all(
            isinstance(k, str) and (not isinstance(v, dict) or _config_key(k, known)) for k, v in value.items()
        )

    if not settings:
        return {}
    if all(is_group(group) for group in settings.values()):
        settings = {"setting": settings}
    axes: dict[str, dict[str, dict[str, Any]]] = {}
    for axis, groups in settings.items():
        _safe_label(axis, "settings", path)
        if not isinstance(groups, dict) or not groups or not all(is_group(g) for g in groups.values()):
            raise ConfigError(
                f"{path}: settings: {axis}: expected a mapping of config keys to values (a named setting) or of "
                f"labels to such mappings (an axis), got {groups!r}"
            )
        axes[axis] = {_safe_label(label, f"settings: {axis}", path): dict(g) for label, g in groups.items()}
    return axes


def _expand(
    path: Path,
    common: dict[str, Any],
    grid: dict[str, list[Any]],
    axes: dict[str, dict[str, dict[str, Any]]],
    seeds: list[int],
    study: Path,
    extra: list[str],
) -> list[PlannedRun]:
    short = short_names(list(grid))
    # What every run shows as hparams in TensorBoard: all config keys the study varies (and the setting labels).
    known = set(config_keys())
    varied = {k for groups in axes.values() for g in groups.values() for k in g} | set(grid)
    varied_keys = sorted({_config_key(k, known) or k for k in varied})
    runs, seen = [], {}
    for labels in itertools.product(*(list(groups) for groups in axes.values())):
        named = dict(zip(axes, labels))
        for values in itertools.product(*grid.values()):
            chosen = dict(zip(grid, values))
            parts = [f"{axis}={label}" for axis, label in named.items()]
            parts += [f"{short[k]}={_value_name(v)}" for k, v in chosen.items()]
            cell = "+".join(parts)
            overrides = dict(common)
            for axis, label in named.items():
                overrides.update(axes[axis][label])
            overrides.update(chosen)
            # "{study}" in a text value is the study folder (a file shared by its runs, say).
            overrides = {k: v.replace("{study}", str(study)) if isinstance(v, str) else v for k, v in overrides.items()}
            signature = json.dumps(overrides, sort_keys=True, default=str)
            if cell in seen or signature in seen.values():
                raise ConfigError(f"{path}: duplicate cell {cell!r} (the same values twice in the grid or settings)")
            seen[cell] = signature
            varied = {**named, **chosen}
            study_keys = {"study.name": study.name, "study.labels": named, "study.hparams": varied_keys}
            texts = [f"{k}={_yaml_text(v)}" for k, v in {**overrides, **study_keys}.items()]
            for seed in seeds:
                runs.append(
                    PlannedRun(cell, seed, study / cell / f"seed{seed}", (*texts, *extra, f"train.seed={seed}"), varied)
                )
    return runs


def _validate(sweep: Sweep, path: Path) -> Sweep:
    """Every run's config must load; an error names the sweep file and the run's cell. Returns the sweep with the
    union of its runs' hparams and metric tags (for the study's HPARAMS experiment)."""
    checked: set[tuple[str, ...]] = set()
    domains: dict[str, list[Any]] = {}
    metrics: dict[str, None] = {}
    for run in sweep.runs:
        key = run.overrides[:-1]  # the seed does not change what is valid
        if key in checked:
            domains.setdefault("train.seed", []).append(run.seed)
            continue
        checked.add(key)
        try:
            cfg = load_run_config(list(sweep.configs), list(run.overrides))
        except ConfigError as exc:
            raise ConfigError(f"{path}: cell {run.cell}: {exc}") from None
        for name, value in run_hparams(cfg).items():
            domains.setdefault(name, []).append(value)
        metrics.update(dict.fromkeys(hparam_metrics(cfg, has_paired=cfg.data.source == "synthetic")))
    domains = {name: list(dict.fromkeys(values)) for name, values in domains.items()}
    return dataclasses.replace(sweep, hparams=domains, metrics=tuple(metrics))


def write_experiment(sweep: Sweep) -> Path:
    """The study's hparams experiment (every key with its values, the metric tags) in the study folder, so that
    ``tensorboard --logdir <study>`` shows one HPARAMS table over all runs; replaces the one written before."""
    description = f"study {sweep.name} ({len(sweep.runs)} runs, from {sweep.path})"
    return write_summaries(sweep.study_dir, [experiment_summary(sweep.hparams, sweep.metrics, description)], ".hparams")


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
    write_experiment(sweep)
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
