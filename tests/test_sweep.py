"""gan/sweep.py: sweep files expanded into runs (cells x settings x seeds), strict validation, self-contained
commands for schedulers, skip-and-resume of a partly done study, failures recorded, parallel worker processes."""

import shlex
from pathlib import Path

import pytest
import yaml

from gan.build import load_run_config
from gan.cli import train_main, train_parser
from gan.errors import ConfigError
from gan.run import read_status, write_status
from gan.sweep import load_sweep, print_commands, run_status, run_sweep


def _sweep_file(tmp_path: Path, tiny_config: Path, **changes) -> Path:
    data = {
        "name": "study",
        "configs": [str(tiny_config)],
        "set": {"train.steps": 4, "train.lr_decay_steps": 2, "hooks.fid.every": 0},
        "grid": {"model.discriminator.spectral_norm.enabled": [True, False], "loss.lambda_gp": [0.0, 10.0]},
        "seeds": [0, 1],
    }
    data.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False))
    return path


def test_expansion_cells_settings_seeds_and_names(tiny_config, tmp_path):
    settings = {"A": {"train.g_lr": 1.0e-4, "train.n_critic": 5}, "B": {"train.g_lr": 2.0e-4, "train.n_critic": 1}}
    sweep = load_sweep(_sweep_file(tmp_path, tiny_config, settings=settings), tmp_path / "out")
    assert len(sweep.runs) == 2 * 2 * 2 * 2  # settings x grid (2 x 2) x seeds
    cells = sorted({run.cell for run in sweep.runs})
    assert "setting=A+enabled=true+lambda_gp=0" in cells and "setting=B+enabled=false+lambda_gp=10" in cells
    run = next(r for r in sweep.runs if r.cell == "setting=B+enabled=false+lambda_gp=10" and r.seed == 1)
    assert run.run_dir == tmp_path / "out" / run.cell / "seed1"
    cfg = load_run_config(list(sweep.configs), list(run.overrides))
    assert (cfg.train.g_lr, cfg.train.n_critic, cfg.train.seed, cfg.train.steps) == (2e-4, 1, 1, 4)
    assert cfg.model.discriminator.spectral_norm.enabled is False and cfg.loss.lambda_gp == 10.0
    assert run.varied == {"setting": "B", "model.discriminator.spectral_norm.enabled": False, "loss.lambda_gp": 10.0}


def test_several_setting_axes_cross_each_other_and_the_grid(tiny_config, tmp_path):
    settings = {
        "constraint": {"sn": {"loss.lambda_gp": 0.0}, "gp": {"model.discriminator.spectral_norm.enabled": False}},
        "adam": {"A": {"train.d_lr": 1.0e-4}, "D": {"train.d_lr": 1.0e-3, "train.beta1": 0.9}},
    }
    common = {"train.steps": 4, "train.lr_decay_steps": 2, "metrics.classifier.path": "{study}/classifier.pt"}
    path = _sweep_file(tmp_path, tiny_config, settings=settings, grid={"train.batch_size": [2, 4]}, set=common)
    sweep = load_sweep(path, tmp_path / "out")
    assert len(sweep.runs) == 2 * 2 * 2 * 2  # constraint x adam x batch sizes x seeds
    run = next(r for r in sweep.runs if r.cell == "constraint=gp+adam=D+batch_size=4")
    cfg = load_run_config(list(sweep.configs), list(run.overrides))
    assert cfg.model.discriminator.spectral_norm.enabled is False and cfg.loss.lambda_gp == 10.0
    assert (cfg.train.d_lr, cfg.train.beta1, cfg.train.batch_size) == (1e-3, 0.9, 4)
    assert cfg.metrics.classifier.path == str(tmp_path / "out" / "classifier.pt")  # {study}: the study folder
    assert cfg.study.name == "out" and cfg.study.labels == {"constraint": "gp", "adam": "D"}
    assert cfg.study.hparams == sorted(
        ["loss.lambda_gp", "model.discriminator.spectral_norm.enabled", "train.d_lr", "train.beta1", "train.batch_size"]
    )
    assert run.varied == {"constraint": "gp", "adam": "D", "train.batch_size": 4}


def test_labels_with_dots_values_with_plus_and_option_keys(tiny_config, tmp_path):
    settings = {
        "beta1": {"0.5": {"train.beta1": 0.5}, "0.9": {"train.beta1": 0.9}},
        "norm": {"group2": {"model.discriminator.norm": "group", "model.discriminator.norm_options.num_groups": 2},
                 "none": {"model.discriminator.norm": "none"}},
    }  # fmt: skip
    grid = {"hooks.stability.gap_limit": [1.0e6]}
    sweep = load_sweep(_sweep_file(tmp_path, tiny_config, settings=settings, grid=grid), tmp_path / "out")
    cells = sorted({r.cell for r in sweep.runs})
    assert "beta1=0.9+norm=group2+gap_limit=1e06" in cells and all("+" not in c.split("=")[-1] for c in cells)
    run = next(r for r in sweep.runs if r.cell.startswith("beta1=0.9+norm=group2"))
    cfg = load_run_config(list(sweep.configs), list(run.overrides))
    assert cfg.train.beta1 == 0.9 and cfg.model.discriminator.norm_options == {"num_groups": 2}
    assert "model.discriminator.norm_options" in cfg.study.hparams


def test_names_keep_keys_with_the_same_last_part_apart(tiny_config, tmp_path):
    grid = {"model.generator.conv_dim": [4, 8], "model.discriminator.conv_dim": [4]}
    sweep = load_sweep(_sweep_file(tmp_path, tiny_config, grid=grid, seeds=[3]), tmp_path / "out")
    assert sorted(r.cell for r in sweep.runs) == [
        "generator.conv_dim=4+discriminator.conv_dim=4",
        "generator.conv_dim=8+discriminator.conv_dim=4",
    ]


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"gird": {"loss.lambda_gp": [1.0]}}, "unknown key 'gird'"),
        ({"grid": {"train.stepz": [1, 2]}}, "unknown key 'train.stepz'"),
        ({"grid": {}}, "grid: empty"),
        ({"grid": {"loss.lambda_gp": []}}, "expected a non-empty list"),
        ({"grid": {"loss.lambda_gp": [1.0, 1.0]}}, "duplicate cell 'lambda_gp=1'"),
        ({"seeds": [0, 0]}, "repeats a seed"),
        ({"grid": {"train.lr_decay_steps": [10]}}, "train.lr_decay_steps: 10 exceeds train.steps = 4"),
        ({"name": "a b"}, "must be a folder name"),
        ({"settings": {"adam": {"A": {"train.d_lr": 1.0}}, "bad": [1]}}, "settings: bad: expected a mapping"),
        ({"settings": {"adam": {"A b": {"train.d_lr": 1.0}}}}, "'A b' must be a folder-name-safe label"),
        ({"settings": {"A": {"train.d_lr": 1.0}, "B": {"train.dlr": 1.0}}}, "unknown key 'train.dlr'"),
    ],
)
def test_bad_sweep_files_are_one_line_errors_naming_the_file(tiny_config, tmp_path, capsys, changes, needle):
    path = _sweep_file(tmp_path, tiny_config, **changes)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_sweep(path)
    assert train_main(["--sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and err.count("\n") == 1


def test_printed_commands_are_self_contained(tiny_config, tmp_path):
    sweep = load_sweep(_sweep_file(tmp_path, tiny_config), tmp_path / "out")
    lines = print_commands(sweep)
    assert len(lines) == len(sweep.runs)
    for line, run in zip(lines, sweep.runs):
        argv = shlex.split(line)
        assert argv[:2] == ["python", "train.py"]
        args = train_parser().parse_args(argv[2:])
        assert args.run_dir == run.run_dir and args.resume == "auto"
        assert load_run_config(args.config, args.set) == load_run_config(list(sweep.configs), list(run.overrides))


def test_a_partly_done_study_skips_finished_runs_and_goes_on_after_failures(tiny_config, tmp_path):
    sweep = load_sweep(_sweep_file(tmp_path, tiny_config), tmp_path / "out")
    started = []

    def fake(run, threads):
        started.append(run.run_dir)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        failed = run.cell.startswith("enabled=false+lambda_gp=0")
        write_status(run.run_dir, "failed" if failed else "completed", 4, "boom" if failed else "")
        return 1 if failed else 0

    first = run_sweep(sweep, workers=2, runner=fake, progress=False)
    assert len(started) == 8 and list(first.values()).count("failed") == 2  # recorded, and the sweep went on
    assert (sweep.study_dir / "sweep.yaml").is_file()
    diverged = sweep.runs[0].run_dir
    write_status(diverged, "diverged", 2, "non-finite loss")
    interrupted = sweep.runs[1].run_dir
    write_status(interrupted, "interrupted", 3)
    started.clear()
    second = run_sweep(sweep, workers=1, runner=fake, progress=False)
    failed = {r.run_dir for r in sweep.runs if r.cell.startswith("enabled=false+lambda_gp=0")}
    assert set(started) == failed | {interrupted}  # completed and diverged runs are final; the others run again
    assert second[str(diverged)] == "diverged"


@pytest.mark.slow
def test_two_worker_processes_train_a_study_and_a_rerun_resumes_nothing(tiny_config, tmp_path, capsys):
    path = _sweep_file(tmp_path, tiny_config, grid={"loss.lambda_gp": [0.0, 10.0]}, seeds=[0])
    study = tmp_path / "study"
    assert train_main(["--sweep", str(path), "--run-dir", str(study), "--workers", "2"]) == 0
    assert "2 completed" in capsys.readouterr().err
    runs = load_sweep(path, study).runs
    for run in runs:
        assert read_status(run.run_dir)["status"] == "completed" and read_status(run.run_dir)["step"] == 4
        assert (run.run_dir / "checkpoints" / "last.pt").is_file() and run_status(run) == "completed"
    mtimes = [(r.run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns for r in runs]
    assert train_main(["--sweep", str(path), "--run-dir", str(study)]) == 0
    assert [(r.run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns for r in runs] == mtimes  # skipped


def test_sweep_options_need_a_sweep(capsys):
    assert train_main(["--workers", "2"]) == 2
    assert "go with --sweep" in capsys.readouterr().err
