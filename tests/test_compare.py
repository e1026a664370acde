"""evaluate.py compare (gan/compare.py) against values computed by hand from crafted run folders: duplicate steps
(the last value written wins), a torn line, a diverged run, an unfinished run, Welch's test, matched baselines."""

import json
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats

from gan.cli import evaluate_main
from gan.compare import baseline_of, compare, curve_area, steps_to, summary

METRIC = "eval/paired_l1"


def _run(folder: Path, seed: int, gp: float, curve: list[tuple[int, float]], status: str | None, **extra) -> Path:
    folder.mkdir(parents=True)
    config = {"train": {"seed": seed, "steps": 200, "progress": False}, "loss": {"lambda_gp": gp}, **extra}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for i, (step, value) in enumerate(curve):
        lines.append(json.dumps({"step": step, "time": 1000.0 + i, METRIC: value, "perf/it_per_s": [10, 10, 2][i % 3]}))
    (folder / "scalars.jsonl").write_text("\n".join(lines) + "\n")
    if status is not None:
        payload = {"status": status, "step": curve[-1][0], "reason": "", "divergence": None}
        if status == "diverged":
            payload["divergence"] = {"step": curve[-1][0], "reason": "critic gap exploded"}
        (folder / "status.json").write_text(json.dumps(payload))
    return folder


@pytest.fixture
def study(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    a, b = root / "gp=0", root / "gp=10"
    # Seed 0 of gp=0 logged step 200 twice (an older file resumed): 9 first, then 4; the last written counts.
    _run(a / "seed0", 0, 0.0, [(0, 10.0), (100, 6.0), (200, 9.0), (200, 4.0)], "completed")
    _run(a / "seed1", 1, 0.0, [(0, 10.0), (100, 5.0), (200, 3.0)], "completed")
    _run(a / "seed2", 2, 0.0, [(0, 10.0), (100, 50.0)], "diverged")
    _run(b / "seed0", 0, 10.0, [(0, 10.0), (100, 8.0), (200, 7.0)], "completed")
    _run(b / "seed1", 1, 10.0, [(0, 10.0), (100, 9.0), (200, 8.0)], "completed")
    _run(b / "seed2", 2, 10.0, [(0, 10.0), (100, 7.0), (200, 6.0)], "completed")
    _run(b / "seed3", 3, 10.0, [(0, 10.0)], None)  # still running: no status.json
    for seed, collapsed, diversity in ((0, 1.0, 0.1), (1, 0.0, 0.5)):
        with open(a / f"seed{seed}" / "scalars.jsonl", "a") as f:
            f.write(json.dumps({"step": 200, "stability/collapsed": collapsed, "stability/diversity/min": diversity}))
            f.write("\n")
    with open(b / "seed2" / "scalars.jsonl", "a") as f:
        f.write('{"step": 300, "eval/paired')  # a torn last line
    return root


def _group(report, name):
    return next(g for g in report["groups"] if g["name"] == name)


def test_compare_statistics_by_hand(study):
    report = compare([study], metric=METRIC, baseline="gp=10")
    assert report["mode"] == "min" and report["runs"] == 7
    assert report["ranking"] == ["gp=0", "gp=10"]
    a, b = _group(report, "gp=0"), _group(report, "gp=10")
    assert a["config"] == {"loss.lambda_gp": 0.0} and b["config"] == {"loss.lambda_gp": 10.0}
    # gp=0: finals 4 (the later duplicate), 3 and the diverged seed as null.
    assert (a["runs"], a["diverged"], a["divergence_rate"]) == (3, 1, pytest.approx(1 / 3))
    assert a["final"]["values"] == [4.0, 3.0, None]
    assert a["final"]["mean"] == pytest.approx(3.5)
    assert a["final"]["std"] == pytest.approx(math.sqrt(0.5))
    half = stats.t.ppf(0.975, 1) * math.sqrt(0.5) / math.sqrt(2)
    assert a["final"]["ci95"] == pytest.approx([3.5 - half, 3.5 + half])
    assert a["best"] == {"value": 3.0, "step": 200, "seed": 1}
    assert a["auc"] == pytest.approx(((100 * 8 + 100 * 5) / 200 + (100 * 7.5 + 100 * 4) / 200) / 2)
    assert a["divergence"] == [{"seed": 2, "step": 100, "reason": "critic gap exploded"}]
    assert a["collapsed"] == 1 and a["signals"]["stability/diversity/min"] == pytest.approx(0.3)
    assert b["collapsed"] == 0 and b["signals"]["stability/diversity/min"] is None
    # gp=10: seed 3 is unfinished: listed, counted as a run, left out of the statistics.
    assert b["runs"] == 4 and b["unfinished"] == [3] and b["diverged"] == 0
    assert b["final"]["values"] == [7.0, 8.0, 6.0, None]
    assert (b["final"]["mean"], b["final"]["std"]) == (pytest.approx(7.0), pytest.approx(1.0))
    # Steps to the baseline's final mean (7): gp=0 at 100 and 100; gp=10 at 200, never, 100.
    assert a["threshold"] == pytest.approx(7.0)
    assert a["steps_to_threshold"] == {"mean": 100.0, "reached": 2, "of": 2}
    assert b["steps_to_threshold"] == {"mean": 150.0, "reached": 2, "of": 3}
    assert a["seconds_per_step"] == pytest.approx(0.1)  # median of 1/it_per_s over 0.1, 0.1, 0.5 (and 0.1)
    # Welch's test by hand.
    va, vb, na, nb = 0.5, 1.0, 2, 3
    t = (3.5 - 7.0) / math.sqrt(va / na + vb / nb)
    df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    vs = a["vs_baseline"]
    assert vs["t"] == pytest.approx(t) and vs["p"] == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert vs["difference"] == pytest.approx(-3.5) and vs["relative"] == pytest.approx(-0.5)
    assert vs["p"] < 0.05 and not vs["inconclusive"] and vs["verdict"] == "better"
    assert b["vs_baseline"]["verdict"] == "baseline"


def test_small_or_noisy_differences_are_inconclusive(tmp_path):
    root = tmp_path / "s"
    for i, (x, y) in enumerate([(5.00, 5.05), (5.01, 5.06), (4.99, 5.04)]):
        _run(root / "gp=0" / f"seed{i}", i, 0.0, [(0, x)], "completed")
        _run(root / "gp=10" / f"seed{i}", i, 10.0, [(0, y)], "completed")
    report = compare([root], metric=METRIC, baseline="gp=10")
    vs = _group(report, "gp=0")["vs_baseline"]
    assert vs["p"] < 0.05  # significant, yet within 2 % of the baseline: seed noise by our rule
    assert vs["inconclusive"] and vs["verdict"] == "inconclusive"
    assert not compare([root], metric=METRIC, baseline="gp=10", tolerance=0.0)["groups"][0]["vs_baseline"][
        "inconclusive"
    ]


def test_matched_baselines_and_hand_made_runs(tmp_path):
    names = ["constraint=sn+adam=A", "constraint=gp+adam=A", "constraint=sn+adam=D", "constraint=gp+adam=D"]
    assert baseline_of("constraint=sn+adam=D", "constraint=gp", names) == "constraint=gp+adam=D"
    assert baseline_of("constraint=sn+adam=D", "constraint=gp+adam=A", names) == "constraint=gp+adam=A"
    assert baseline_of("other", "constraint=gp", names) is None
    # Hand-made runs outside any study compare too: grouped by config minus the seed, named by what differs.
    for i in range(2):
        _run(tmp_path / f"run-sn-{i}", i, 0.0, [(0, 2.0 + i)], "completed")
        _run(tmp_path / f"run-gp-{i}", i, 10.0, [(0, 4.0 + i)], "completed")
    report = compare([tmp_path / f"run-{k}-{i}" for k in ("sn", "gp") for i in range(2)], metric=METRIC)
    assert sorted(g["name"] for g in report["groups"]) == ["lambda_gp=0.0", "lambda_gp=10.0"]
    assert report["baseline"] == "lambda_gp=0.0"  # the first group by name
    assert _group(report, "lambda_gp=10.0")["final"]["values"] == [4.0, 5.0]


def test_curve_helpers():
    assert curve_area({0: 1.0, 10: 3.0}) == pytest.approx(2.0)
    assert curve_area({5: 7.0}) == 7.0 and curve_area({}) is None
    assert steps_to({0: 5.0, 10: 3.0, 20: 1.0}, 3.0, "min") == 10
    assert steps_to({0: 0.1, 10: 0.5}, 0.4, "max") == 10 and steps_to({0: 5.0}, 1.0, "min") is None
    assert summary([1.0, None, float("nan")]) == {"n": 1, "mean": 1.0, "std": None, "ci95": None}


def test_cli_json_and_report_files(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert evaluate_main(["compare", str(study), "--metric", METRIC, "--baseline", "gp=10", "--json",
                          "--out", str(out)]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    first = printed["groups"][0]
    assert {"name", "config", "runs", "diverged", "final"} <= set(first)
    assert {"mean", "std", "values"} <= set(first["final"])
    for name in ("report.md", "report.csv", "report.json", "metric_over_steps.png", "final_values.png",
                 "divergence.png", "lipschitz_upper_bound.png", "grad_norm.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "report.json").read_text())["ranking"] == ["gp=0", "gp=10"]
    text = (out / "report.md").read_text()
    assert "| 1 | gp=0 | 3 | 1 (33%) | 3.5 ± 0.7071 |" in text and "+1 unfinished" in text
    assert "gp=0 seed 2: step 100: critic gap exploded" in text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--baseline", "gp=99"], "--baseline gp=99: no such group"),
        (["--metric", "eval/nothing"], "--metric eval/nothing: no run logged this tag"),
    ],
)
def test_cli_errors_are_one_line(study, capsys, args, needle):
    assert evaluate_main(["compare", str(study), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_cli_error_for_a_folder_without_runs(tmp_path, capsys):
    assert evaluate_main(["compare", str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert evaluate_main(["compare", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_groups_without_spread_and_non_finite_values_give_strict_json(tmp_path, capsys):
    root = tmp_path / "s"
    for i in range(2):
        _run(root / "gp=0" / f"seed{i}", i, 0.0, [(0, 1.0)], "completed")
        _run(root / "gp=10" / f"seed{i}", i, 10.0, [(0, 0.9)], "completed")
    _run(root / "gp=10" / "seed2", 2, 10.0, [(0, float("nan"))], "completed")
    assert evaluate_main(["compare", str(root), "--metric", METRIC, "--baseline", "gp=10", "--json",
                          "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    a = _group(report, "gp=0")
    assert a["vs_baseline"]["t"] is None and a["vs_baseline"]["p"] == 0.0 and a["vs_baseline"]["verdict"] == "worse"
    assert _group(report, "gp=10")["final"]["values"] == [0.9, 0.9, None]  # a NaN last value counts as none


def test_the_report_names_the_sample_sizes_and_refuses_to_hide_a_mismatch(tmp_path):
    from gan.compare import compare_runs, find_runs, report_text

    def evaluated(folder, seed, gp, images):
        run = _run(folder, seed, gp, [(0, 100.0), (200, 50.0 + seed)], "completed")
        with open(run / "scalars.jsonl", "a") as f:
            f.write(json.dumps({"step": 200, "eval/fid/mean": 50.0 + seed + gp}) + "\n")
        status = json.loads((run / "status.json").read_text())
        sizes = f"{images} translations vs {images} real images per target domain"
        status["evaluation"] = {"extractor": "inception", "sample_sizes": sizes}
        (run / "status.json").write_text(json.dumps(status))

    for seed in (0, 1):
        evaluated(tmp_path / "a" / f"seed{seed}", seed, 0.0, 64)
        evaluated(tmp_path / "b" / f"seed{seed}", seed, 10.0, 64)
    report = compare_runs(find_runs([tmp_path]), "eval/fid/mean")
    assert report["measured_on"] == ["64 translations vs 64 real images per target domain, inception"]
    assert "Measured on 64 translations vs 64 real images per target domain, inception" in report_text(report)
    assert compare_runs(find_runs([tmp_path]), METRIC)["measured_on"] == []  # paired L1 has no such caveat
    evaluated(tmp_path / "b" / "seed2", 2, 10.0, 256)
    text = report_text(compare_runs(find_runs([tmp_path]), "eval/fid/mean"))
    assert "**Not comparable**" in text and "256 translations vs 256" in text
