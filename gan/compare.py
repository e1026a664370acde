"""``evaluate.py compare``: group training runs by their config (every value but the seed), summarise each group's
metric over its seeds, and say which differences from a baseline group are real.

A run is any folder holding ``config.yaml`` and ``scalars.jsonl`` (``status.json`` says how it ended; without one the
run counts as unfinished). Statistics of the final value are over the runs that finished without diverging: a
diverged run counts in the divergence rate and shows as null in the per-seed values; an unfinished one (still
running, interrupted, failed) is listed and left out. Differences from the baseline use Welch's t-test on the final
values; a difference is *inconclusive* when p >= 0.05, when either group has fewer than two values, or when it is
within ``tolerance`` (default 2 %) of the baseline's mean, the size of seed noise that "The FID Lottery" (2026) finds
for FID.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

from gan.config import read_yaml  # noqa: E402
from gan.errors import UserError  # noqa: E402
from gan.sweep import short_names  # noqa: E402
from gan.writers import read_scalars  # noqa: E402

# Config keys that do not change what a run computes: runs differing only in these are repetitions of one setting.
IGNORED_KEYS = ("train.seed", "train.progress", "study.")
AUTO_METRICS = ("eval/fid/mean", "eval/classifier_fd/mean", "eval/paired_l1")
# Final values of these are summarised per group beside the metric (mean over the runs that logged them).
SIGNALS = (
    "stability/diversity/min",
    "stability/overfit/gap",
    "stability/grad_norm/max",
    "stability/critic_gap",
    "lipschitz/D/upper_bound",
)
HIGHER_IS_BETTER = ("accuracy", "psnr")
ENDED = ("completed", "diverged")


# ---------------------------------------------------------------------------------------------------- reading
@dataclass
class Run:
    """One run folder as compare sees it."""

    path: Path
    config: dict[str, Any]  # flattened: dotted key -> value
    status: dict[str, Any]
    scalars: dict[str, dict[int, float]]

    @property
    def seed(self) -> int:
        return int(self.config.get("train.seed", 0))

    @property
    def state(self) -> str:
        """completed, diverged (also a run that went on after a divergence signal), or unfinished."""
        if self.status.get("status") == "diverged" or self.status.get("divergence"):
            return "diverged"
        return "completed" if self.status.get("status") == "completed" else "unfinished"

    @property
    def cell(self) -> str | None:
        """The study cell folder (``<study>/<cell>/seed<k>``), if the run lives in one."""
        return self.path.parent.name if re.fullmatch(r"seed\d+", self.path.name) else None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and not key.endswith(("_options", "labels")):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_run(path: Path) -> Run:
    """A run folder; a missing or unreadable config.yaml is a UserError naming the file."""
    config_file = path / "config.yaml"
    try:
        config = read_yaml(config_file)  # the config reader's limits and checks (size, depth, aliases, keys)
    except UserError as exc:
        raise UserError(f"cannot read the run's config: {exc}") from None
    try:
        status = json.loads((path / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = {}
    return Run(path, _flatten(config), status if isinstance(status, dict) else {}, read_scalars(path / "scalars.jsonl"))


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run folder at or below ``paths`` (run folders or study folders), each once, in path order."""
    found: dict[Path, Path] = {}  # resolved -> as given (reports show the paths the user typed)
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            raise UserError(f"{root}: no such folder (give run folders or study folders)")
        candidates = [root] if (root / "config.yaml").is_file() else []
        candidates += sorted(p.parent for p in root.rglob("config.yaml") if p.parent != root)
        for folder in candidates:
            if (folder / "scalars.jsonl").is_file():
                found.setdefault(folder.resolve(), folder)
    if not found:
        raise UserError(f"{', '.join(map(str, paths))}: no run folders (config.yaml with scalars.jsonl) found")
    return [read_run(p) for p in found.values()]


# ------------------------------------------------------------------------------------------------- statistics
def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample std and the 95 % t interval of the mean over the finite values (None where undefined)."""
    xs = _finite(values)
    n = len(xs)
    mean = statistics.fmean(xs) if xs else None
    std = statistics.stdev(xs) if n > 1 else None
    ci = None
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "std": std, "ci95": ci}


def curve_area(series: dict[int, float]) -> float | None:
    """The trapezoid area under a metric curve divided by its step range: the metric's average over training (one
    point: that value)."""
    points = [(s, v) for s, v in series.items() if math.isfinite(v)]
    if not points:
        return None
    if len(points) == 1:
        return points[0][1]
    area = sum((s1 - s0) * (v0 + v1) / 2 for (s0, v0), (s1, v1) in zip(points, points[1:]))
    return area / (points[-1][0] - points[0][0])


def steps_to(series: dict[int, float], threshold: float, mode: str) -> int | None:
    """The first logged step at which the metric reached ``threshold`` (<= for min, >= for max), or None."""
    for step, value in series.items():
        if math.isfinite(value) and (value <= threshold if mode == "min" else value >= threshold):
            return step
    return None


def seconds_per_step(run: Run) -> float | None:
    """The median of 1 / perf/it_per_s: training speed, robust to the rows that include an evaluation."""
    rates = [v for v in run.scalars.get("perf/it_per_s", {}).values() if math.isfinite(v) and v > 0]
    return statistics.median(1 / r for r in rates) if rates else None


def welch(values: Sequence[float], baseline: Sequence[float], tolerance: float) -> dict[str, Any]:
    """Welch's t-test of two groups' final values, and whether the difference is inconclusive."""
    a, b = _finite(values), _finite(baseline)
    out: dict[str, Any] = {"difference": None, "relative": None, "t": None, "p": None, "inconclusive": True}
    if not a or not b:
        return out
    diff = statistics.fmean(a) - statistics.fmean(b)
    base = statistics.fmean(b)
    out["difference"] = diff
    out["relative"] = diff / abs(base) if base else None
    if len(a) > 1 and len(b) > 1:
        if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:  # no spread: t is undefined, the gap exact
            p, t = (1.0, None) if diff == 0 else (0.0, None)
        else:
            result = stats.ttest_ind(a, b, equal_var=False)
            t, p = float(result.statistic), float(result.pvalue)
            t = t if math.isfinite(t) else None
        out["t"], out["p"] = t, p
        small = out["relative"] is not None and abs(out["relative"]) < tolerance
        out["inconclusive"] = bool(p >= 0.05 or small)
    return out


# ----------------------------------------------------------------------------------------------------- groups
@dataclass
class Group:
    name: str
    config: dict[str, Any]  # the values this group's runs share that tell the groups apart
    runs: list[Run] = field(default_factory=list)


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by every config value except IGNORED_KEYS, named by their study cell when every run of a group
    has the same one (and the cells tell the groups apart), else by the config values that differ between groups."""

    def key_of(run: Run) -> str:
        kept = {k: v for k, v in run.config.items() if not k.startswith(IGNORED_KEYS)}
        return json.dumps(kept, sort_keys=True, default=str)

    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(key_of(run), []).append(run)
    members = list(by_key.values())
    keys = sorted({k for run in runs for k in run.config if not k.startswith(IGNORED_KEYS)})
    differing = [k for k in keys if len({json.dumps(g[0].config.get(k), default=str) for g in members}) > 1]
    short = short_names(differing)
    groups = []
    for group in members:
        shared = {k: group[0].config.get(k) for k in differing}
        name = "+".join(f"{short[k]}={v}" for k, v in shared.items()) or "all runs"
        groups.append(Group(name, shared, sorted(group, key=lambda r: (r.seed, str(r.path)))))
    cells = [{r.cell for r in g.runs} for g in groups]
    if all(len(c) == 1 and None not in c for c in cells) and len({next(iter(c)) for c in cells}) == len(groups):
        for g, c in zip(groups, cells):
            g.name = next(iter(c))
    if len({g.name for g in groups}) < len(groups):  # e.g. the same cell name in two studies
        for g in groups:
            g.name = f"{g.name} ({g.runs[0].path.parent.parent.name})"
    return groups


def _parts(name: str) -> dict[str, str]:
    return dict(part.split("=", 1) if "=" in part else (part, "") for part in name.split("+"))


def baseline_of(name: str, spec: str, names: Sequence[str]) -> str | None:
    """The baseline group of group ``name``: ``spec`` itself if it names a group, else the group that differs from
    ``name`` only in the parts ``spec`` gives (``constraint=gp`` for ``constraint=sn+adam=D`` is
    ``constraint=gp+adam=D``: each Adam setting against its own StarGAN cell), or None."""
    if spec in names:
        return spec
    parts, want = _parts(name), _parts(spec)
    if not set(want) <= set(parts):
        return None
    candidate = "+".join(f"{k}={want.get(k, v)}" if v or k in want else k for k, v in parts.items())
    return candidate if candidate in names else None


def choose_metric(runs: list[Run], metric: str | None) -> str:
    if metric:
        if not any(metric in r.scalars for r in runs):
            raise UserError(f"--metric {metric}: no run logged this tag")
        return metric
    for tag in AUTO_METRICS:
        if any(tag in r.scalars for r in runs):
            return tag
    raise UserError(f"no run logged any of {', '.join(AUTO_METRICS)}; name the tag to compare with --metric")


def default_mode(metric: str) -> str:
    return "max" if any(word in metric for word in HIGHER_IS_BETTER) else "min"


def _last(run: Run, tag: str) -> float | None:
    """The last logged value of ``tag`` (None if never logged)."""
    series = run.scalars.get(tag)
    return next(reversed(series.values())) if series else None


def _group_stats(group: Group, metric: str, mode: str, threshold: float | None) -> dict[str, Any]:
    pick = min if mode == "min" else max
    finals: list[float | None] = []
    best: dict[str, Any] | None = None
    areas, reached, speeds = [], [], []
    for run in group.runs:
        series = run.scalars.get(metric, {})
        usable = run.state == "completed" and series
        last = next(reversed(series.values())) if usable else None
        finals.append(last if last is not None and math.isfinite(last) else None)  # JSON has no NaN
        speed = seconds_per_step(run)
        if speed is not None:
            speeds.append(speed)
        if not usable:
            continue
        finite = {s: v for s, v in series.items() if math.isfinite(v)}
        if finite:
            step, value = pick(finite.items(), key=lambda item: item[1])
            if best is None or (value < best["value"] if mode == "min" else value > best["value"]):
                best = {"value": value, "step": step, "seed": run.seed}
        areas.append(curve_area(series))
        if threshold is not None:
            reached.append(steps_to(series, threshold, mode))
    diverged = [r for r in group.runs if r.state == "diverged"]
    unfinished = [r for r in group.runs if r.state == "unfinished"]
    collapsed = [r for r in group.runs if _last(r, "stability/collapsed") == 1.0]
    signals = {tag: summary([_last(r, tag) for r in group.runs])["mean"] for tag in SIGNALS}
    reached_steps = [s for s in reached if s is not None]
    return {
        "name": group.name,
        "config": group.config,
        "runs": len(group.runs),
        "seeds": [r.seed for r in group.runs],
        "paths": [str(r.path) for r in group.runs],
        "diverged": len(diverged),
        "divergence_rate": len(diverged) / len(group.runs),
        "divergence": [
            {"seed": r.seed, **(r.status.get("divergence") or {"step": r.status.get("step"), "reason": ""})}
            for r in diverged
        ],
        "unfinished": [r.seed for r in unfinished],
        "collapsed": len(collapsed),
        "signals": signals,
        "final": {**summary(finals), "values": finals},
        "best": best,
        "auc": summary(areas)["mean"],
        "steps_to_threshold": {
            "mean": statistics.fmean(reached_steps) if reached_steps else None,
            "reached": len(reached_steps),
            "of": len(reached),
        },
        "seconds_per_step": statistics.fmean(speeds) if speeds else None,
    }


def compare(
    paths: Sequence[str | Path],
    metric: str | None = None,
    mode: str | None = None,
    baseline: str | None = None,
    threshold: float | None = None,
    tolerance: float = 0.02,
) -> dict[str, Any]:
    """The comparison report of every run at or below ``paths`` (see :func:`compare_runs`)."""
    return compare_runs(find_runs(paths), metric, mode, baseline, threshold, tolerance)


def compare_runs(
    runs: list[Run],
    metric: str | None = None,
    mode: str | None = None,
    baseline: str | None = None,
    threshold: float | None = None,
    tolerance: float = 0.02,
) -> dict[str, Any]:
    """The comparison report as a JSON-ready dict (see the module docstring); ``groups`` in ranking order.

    ``baseline``: a group name, or parts of one (``constraint=gp``) that give every group its own baseline: the
    group that differs from it only there (default: the first group by name). ``threshold`` (steps to reach it)
    defaults to each group's baseline's final mean."""
    metric = choose_metric(runs, metric)
    mode = mode or default_mode(metric)
    groups = group_runs(runs)
    names = [g.name for g in groups]
    spec = baseline if baseline is not None else sorted(names)[0]
    matched = {name: baseline_of(name, spec, names) for name in names}
    if not any(matched.values()):
        raise UserError(f"--baseline {spec}: no such group; the groups are: {', '.join(sorted(names))}")
    by_name = {g.name: g for g in groups}
    base_stats = {b: _group_stats(by_name[b], metric, mode, None) for b in set(matched.values()) if b}
    rows = []
    for g in groups:
        base = matched[g.name]
        limit = threshold if threshold is not None else (base_stats[base]["final"]["mean"] if base else None)
        row = _group_stats(g, metric, mode, limit)
        row["baseline"], row["threshold"] = base, limit
        vs = welch(row["final"]["values"], base_stats[base]["final"]["values"], tolerance) if base else welch([], [], 0)
        if base == g.name:
            vs["verdict"] = "baseline"
        elif vs["difference"] is not None and not vs["inconclusive"]:
            better = vs["difference"] < 0 if mode == "min" else vs["difference"] > 0
            vs["verdict"] = "better" if better else "worse"
        else:
            vs["verdict"] = "inconclusive" if vs["difference"] is not None else "no data"
        row["vs_baseline"] = vs
        rows.append(row)
    sign = 1 if mode == "min" else -1
    rows.sort(key=lambda r: (r["final"]["mean"] is None, sign * (r["final"]["mean"] or 0.0), r["divergence_rate"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {
        "metric": metric,
        "mode": mode,
        "measured_on": measured_on(runs, metric),
        "baseline": spec,
        "threshold": threshold,
        "tolerance": tolerance,
        "runs": len(runs),
        "groups": rows,
        "ranking": [r["name"] for r in rows],
    }


def measured_on(runs: list[Run], metric: str) -> list[str]:
    """The distinct sample sizes and features behind an ``eval/`` distance or accuracy metric, from the runs'
    status.json ``evaluation`` entries (e.g. "64 translations vs 64 real images per target domain, inception");
    more than one means the groups' values are not comparable."""
    if not metric.startswith("eval/") or metric.startswith("eval/paired"):
        return []
    seen = {
        f"{e['sample_sizes']}, {e.get('extractor')}"
        for run in runs
        if isinstance(e := run.status.get("evaluation"), dict) and "sample_sizes" in e
    }
    return sorted(seen)


# ------------------------------------------------------------------------------------------------------ output
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def report_text(report: dict[str, Any]) -> str:
    """The Markdown report (also what compare prints without --json)."""
    m = report["metric"]
    lines = [
        f"# Comparison: {m} ({'lower' if report['mode'] == 'min' else 'higher'} is better)",
        "",
        f"{report['runs']} runs in {len(report['groups'])} groups; baseline **{report['baseline']}** (each group "
        "against the group that differs from it only there). Final value = "
        f"the last logged {m} of each run that completed without diverging (mean ± std over seeds, 95 % t "
        f"interval). vs baseline: Welch's t-test; inconclusive when p >= 0.05, fewer than 2 runs, or within "
        f"{report['tolerance']:.0%} of the baseline mean. Steps to threshold ("
        f"{_fmt(report['threshold']) if report['threshold'] is not None else 'the baseline final mean'}): first logged "
        "step reaching it, mean over the runs that did (reached/runs).",
        "",
    ]
    sizes = report.get("measured_on") or []
    if len(sizes) == 1:
        lines += [f"Measured on {sizes[0]} (compare only with values at the same sample sizes).", ""]
    elif sizes:
        lines += [
            f"**Not comparable**: the runs were measured on different sample sizes or features: {'; '.join(sizes)}.",
            "",
        ]
    lines += [
        "| rank | group | runs | diverged | final mean ± std | 95 % interval | per seed | best (step) | "
        "curve mean | steps to threshold | s/step | vs baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in report["groups"]:
        f, vs = g["final"], g["vs_baseline"]
        ci = f"[{_fmt(f['ci95'][0])}, {_fmt(f['ci95'][1])}]" if f["ci95"] else "-"
        per_seed = ", ".join(_fmt(v) for v in f["values"])
        best = f"{_fmt(g['best']['value'])} ({g['best']['step']})" if g["best"] else "-"
        reach = g["steps_to_threshold"]
        reach_text = f"{_fmt(reach['mean'])} ({reach['reached']}/{reach['of']})" if reach["of"] else "-"
        if vs["verdict"] == "baseline":
            verdict = "baseline"
        elif vs["difference"] is None:
            verdict = f"no data ({g['baseline']})" if g["baseline"] else "-"
        else:
            p = f", p={vs['p']:.2g}" if vs["p"] is not None else ""
            verdict = f"{vs['verdict']} ({vs['relative']:+.1%}{p})" if vs["relative"] is not None else vs["verdict"]
        unfinished = f" +{len(g['unfinished'])} unfinished" if g["unfinished"] else ""
        lines.append(
            f"| {g['rank']} | {g['name']} | {g['runs']}{unfinished} | {g['diverged']} ({g['divergence_rate']:.0%}) | "
            f"{_fmt(f['mean'])} ± {_fmt(f['std'])} | {ci} | {per_seed} | {best} | {_fmt(g['auc'])} | {reach_text} | "
            f"{_fmt(g['seconds_per_step'], 3)} | {verdict} |"
        )
    lines += [
        "",
        "Stability signals: the last logged value of each run, mean over the runs of the group (diverged ones at the "
        "step they stopped); collapsed = runs whose last evaluation had stability/collapsed = 1.",
        "",
        "| group | collapsed | " + " | ".join(SIGNALS) + " |",
        "|---|---|" + "---|" * len(SIGNALS),
    ]
    for g in report["groups"]:
        values = " | ".join(_fmt(g["signals"][tag], 3) for tag in SIGNALS)
        lines.append(f"| {g['name']} | {g['collapsed']}/{g['runs']} | {values} |")
    diverged = [(g["name"], d) for g in report["groups"] for d in g["divergence"]]
    if diverged:
        lines += ["", "## Divergences", ""]
        lines += [f"- {name} seed {d['seed']}: step {d.get('step')}: {d.get('reason', '')}" for name, d in diverged]
    return "\n".join(lines) + "\n"


def report_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["rank", "group", "runs", "diverged", "divergence_rate", "unfinished", "final_mean", "final_std",
                "ci95_low", "ci95_high", "final_values", "best", "best_step", "auc", "steps_to_threshold",
                "seconds_per_step", "baseline", "vs_baseline", "relative", "p"])  # fmt: skip
    for g in report["groups"]:
        f, vs, ci = g["final"], g["vs_baseline"], g["final"]["ci95"] or [None, None]
        w.writerow([g["rank"], g["name"], g["runs"], g["diverged"], g["divergence_rate"], len(g["unfinished"]),
                    f["mean"], f["std"], ci[0], ci[1], " ".join("null" if v is None else repr(v) for v in f["values"]),
                    g["best"]["value"] if g["best"] else None, g["best"]["step"] if g["best"] else None, g["auc"],
                    g["steps_to_threshold"]["mean"], g["seconds_per_step"], g["baseline"], vs["verdict"],
                    vs["relative"], vs["p"]])  # fmt: skip
    return out.getvalue()


REPORT_FILES = ("report.md", "report.csv", "report.json")
PLOT_FILES = (
    "metric_over_steps.png",
    "final_values.png",
    "divergence.png",
    "lipschitz_upper_bound.png",
    "grad_norm.png",
)
OUTPUT_FILES = REPORT_FILES + PLOT_FILES  # everything write_report writes into its folder


def write_report(report: dict[str, Any], runs: list[Run], out: Path) -> list[Path]:
    """report.md, report.csv, report.json and the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, csv, js = REPORT_FILES
    files = {md: report_text(report), csv: report_csv(report)}
    files[js] = json.dumps(report, indent=2, allow_nan=False, default=_json_default) + "\n"
    written = []
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written + plot_report(report, runs, out)


def _json_default(value: Any) -> Any:
    return str(value)


# ------------------------------------------------------------------------------------------------------- plots
def _runs_by_group(report: dict[str, Any], runs: list[Run]) -> dict[str, list[Run]]:
    by_path = {str(r.path): r for r in runs}
    return {g["name"]: [by_path[p] for p in g["paths"]] for g in report["groups"]}


def _band(runs: list[Run], tag: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps, mean, min and max over the runs' values of ``tag`` at the steps all of them logged."""
    series = [r.scalars[tag] for r in runs if tag in r.scalars]
    if not series:
        return [], [], [], []
    steps = sorted(set.intersection(*(set(s) for s in series)))
    rows = [[s[step] for s in series] for step in steps]
    return steps, [statistics.fmean(v) for v in rows], [min(v) for v in rows], [max(v) for v in rows]


def _panels(report: dict[str, Any]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Study cells named ``a=x+b=y``: one panel per value of the last part, one line per the rest; else one panel."""
    names = [g["name"] for g in report["groups"]]
    parts = [n.split("+") for n in names]
    if len(names) > 6 and all(len(p) > 1 for p in parts):
        panel = {n: p[-1] for n, p in zip(names, parts)}
        line = {n: "+".join(p[:-1]) for n, p in zip(names, parts)}
    else:
        panel, line = dict.fromkeys(names, ""), {n: n for n in names}
    return sorted(set(panel.values())), panel, line


def _plot_curves(report: dict[str, Any], groups: dict[str, list[Run]], tags: list[str], path: Path, log: bool) -> Path:
    titles, panel, line = _panels(report)
    cols = min(3, len(titles))
    rows = math.ceil(len(titles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colours = {name: f"C{i % 10}" for i, name in enumerate(sorted(set(line.values())))}
    for ax, title in zip(axes.flat, titles):
        for name, members in groups.items():
            if panel[name] != title:
                continue
            ok = [r for r in members if r.state == "completed"] or members
            tag = next((t for t in tags if any(t in r.scalars for r in ok)), None)
            if tag is None:
                continue
            steps, mean, lo, hi = _band(ok, tag)
            if steps:
                ax.plot(steps, mean, color=colours[line[name]], label=line[name])
                ax.fill_between(steps, lo, hi, color=colours[line[name]], alpha=0.2)
        ax.set_title(title or tags[0])
        ax.set_xlabel("step")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(titles) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels) or 1), frameon=False)
    fig.suptitle(f"{' / '.join(tags)}: mean over seeds, band = min-max (diverged runs left out where others ended)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_report(report: dict[str, Any], runs: list[Run], out: Path) -> list[Path]:
    groups = _runs_by_group(report, runs)
    order = [g["name"] for g in report["groups"]]
    curves, finals, divergence, bound, grads = (out / name for name in PLOT_FILES)
    paths = [_plot_curves(report, groups, [report["metric"]], curves, log=False)]
    # Final values per group: one dot per seed; diverged seeds as red crosses on the top edge.
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(order)), 4.5))
    for i, g in enumerate(report["groups"]):
        values = g["final"]["values"]
        ok = [v for v in values if v is not None]
        ax.scatter([i] * len(ok), ok, color="C0", s=18, zorder=3)
        if g["final"]["mean"] is not None:
            ax.hlines(g["final"]["mean"], i - 0.3, i + 0.3, color="k", lw=1)
        if g["diverged"]:
            ax.scatter([i] * g["diverged"], [1.0] * g["diverged"], transform=ax.get_xaxis_transform(), marker="x",
                       color="C3", s=30, clip_on=False)  # fmt: skip
    ax.set_xticks(range(len(order)), order, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(f"final {report['metric']}")
    ax.set_title("final value per seed (bar = mean; red x = diverged seed)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(finals, dpi=110)
    plt.close(fig)
    paths.append(finals)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(order)), 4))
    ax.bar(range(len(order)), [g["divergence_rate"] for g in report["groups"]], color="C3")
    ax.set_xticks(range(len(order)), order, rotation=70, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of seeds that diverged")
    ax.set_title("divergence per group")
    fig.tight_layout()
    fig.savefig(divergence, dpi=110)
    plt.close(fig)
    paths.append(divergence)
    paths.append(_plot_curves(report, groups, ["lipschitz/D/upper_bound"], bound, True))
    grad_tags = ["stability/grad_norm/max", "lipschitz/D/grad_norm/interp"]
    paths.append(_plot_curves(report, groups, grad_tags, grads, log=True))
    return paths
