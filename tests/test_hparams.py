"""TensorBoard hparams, read back from the event files with tensorboard's own reader: each run's session start and
end in its own event file (no extra sub-run), booleans as booleans, failure for a diverged run, the experiment in the
run (single run) or once in the study folder with the union of every run's keys; the config as text."""

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing import event_multiplexer
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from gan.build import load_run_config
from gan.run import train
from gan.sweep import load_sweep, run_sweep
from gan.trainer import DivergedError, Trainer
from tests.conftest import after_d_step


def _read(
    logdir: Path,
) -> tuple[dict[str, dict[str, plugin_data_pb2.HParamsPluginData]], event_multiplexer.EventMultiplexer]:
    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    out = {}
    for run, tags in mux.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        out[run] = {tag: plugin_data_pb2.HParamsPluginData.FromString(content) for tag, content in tags.items()}
    return out, mux


def _values(info: plugin_data_pb2.SessionStartInfo) -> dict[str, object]:
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}


def test_a_single_run_writes_experiment_and_session_into_its_own_event_file(tiny_config, tmp_path):
    cfg = load_run_config([tiny_config], ["hooks.fid.every=0"])
    train(cfg, tmp_path / "run", handle_signals=False)
    found, mux = _read(tmp_path)
    assert list(found) == ["run"]  # no extra sub-run folder (SummaryWriter.add_hparams would make one)
    data = found["run"]
    experiment = data[metadata.EXPERIMENT_TAG].experiment
    infos = {h.name: h for h in experiment.hparam_infos}
    assert infos["model.discriminator.spectral_norm.enabled"].type == api_pb2.DATA_TYPE_BOOL
    assert infos["train.d_lr"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["loss.adversarial"].type == api_pb2.DATA_TYPE_STRING
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert {"eval/paired_l1", "best/eval/paired_l1", "stability/diverged", "stability/overfit/gap"} <= set(metrics)
    start = data[metadata.SESSION_START_INFO_TAG].session_start_info
    values = _values(start)
    assert values["model.discriminator.spectral_norm.enabled"] is True  # a bool, not 1.0
    assert values["train.seed"] == 0.0 and values["loss.adversarial"] == "wgan"
    assert data[metadata.SESSION_END_INFO_TAG].session_end_info.status == api_pb2.STATUS_SUCCESS
    # Metrics are ordinary scalars of the same run (the scalars plugin's tensors); the config is TensorBoard text.
    tags = mux.GetAccumulator("run").Tags()
    assert "best/eval/paired_l1" in tags["tensors"] and "stability/diverged" in tags["tensors"]
    text = mux.GetAccumulator("run").Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert yaml.safe_load("\n".join(line[4:] for line in text.splitlines()))["train"]["steps"] == 6


def test_a_diverged_run_ends_its_session_as_failure(tiny_config, tmp_path, monkeypatch):
    def poison(t, parts):
        if t.step >= 2:
            t.nonfinite |= torch.tensor(True)

    after_d_step(monkeypatch, poison)
    with pytest.raises(DivergedError):
        train(load_run_config([tiny_config], ["hooks.fid.every=0"]), tmp_path / "run", handle_signals=False)
    found, _ = _read(tmp_path)
    assert found["run"][metadata.SESSION_END_INFO_TAG].session_end_info.status == api_pb2.STATUS_FAILURE


def test_a_study_writes_one_experiment_with_the_union_of_keys(tiny_config, tmp_path):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "hp",
        "configs": [str(tiny_config)],
        "set": {"train.steps": 2, "train.lr_decay_steps": 0, "hooks.fid.every": 0},
        "grid": {"model.discriminator.spectral_norm.enabled": [True, False]},
        "settings": {"adam": {"A": {"train.d_lr": 1.0e-4}, "D": {"train.d_lr": 1.0e-3, "train.beta1": 0.9}}},
        "seeds": [0, 1],
    }))  # fmt: skip
    sweep = load_sweep(sweep_file, tmp_path / "study")
    codes = []

    def in_process(run, threads):  # the same train() the child processes call, without their start-up time
        cfg = load_run_config(list(sweep.configs), list(run.overrides))
        train(cfg, run.run_dir, "auto", handle_signals=False)
        codes.append(0)
        return 0

    statuses = run_sweep(sweep, runner=in_process, progress=False)
    assert set(statuses.values()) == {"completed"} and len(codes) == 8
    found, _ = _read(tmp_path / "study")
    experiments = [run for run, tags in found.items() if metadata.EXPERIMENT_TAG in tags]
    assert experiments == ["."]  # only the study folder holds the experiment
    infos = {h.name: h for h in found["."][metadata.EXPERIMENT_TAG].experiment.hparam_infos}
    assert set(infos) == {"adam", "model.discriminator.spectral_norm.enabled", "train.beta1", "train.d_lr",
                          "train.seed"}  # fmt: skip
    assert [v.bool_value for v in infos["model.discriminator.spectral_norm.enabled"].domain_discrete.values] == [
        False,
        True,
    ]
    assert [v.string_value for v in infos["adam"].domain_discrete.values] == ["A", "D"]
    assert sorted(v.number_value for v in infos["train.seed"].domain_discrete.values) == [0.0, 1.0]
    sessions = {run: tags for run, tags in found.items() if run != "."}
    assert len(sessions) == 8
    run = "adam=D+enabled=false/seed1"
    start = sessions[run][metadata.SESSION_START_INFO_TAG].session_start_info
    assert start.group_name == "adam=D+enabled=false"
    assert _values(start) == {"adam": "D", "model.discriminator.spectral_norm.enabled": False, "train.beta1": 0.9,
                              "train.d_lr": 1e-3, "train.seed": 1.0}  # fmt: skip
    assert all(metadata.SESSION_END_INFO_TAG in tags for tags in sessions.values())
    # Running the study again replaces its experiment file rather than adding another.
    run_sweep(sweep, runner=in_process, progress=False)
    assert len(list((tmp_path / "study").glob("events.out.tfevents.*"))) == 1


def test_a_resumed_run_shows_its_latest_session_only(tiny_config, tmp_path, monkeypatch):
    def poison(t, parts):
        if t.step == 4:
            t.nonfinite |= torch.tensor(True)

    original = after_d_step(monkeypatch, poison)
    cfg = load_run_config([tiny_config], ["hooks.fid.every=0"])
    with pytest.raises(DivergedError):
        train(cfg, tmp_path / "run", handle_signals=False)
    found, _ = _read(tmp_path)
    assert found["run"][metadata.SESSION_END_INFO_TAG].session_end_info.status == api_pb2.STATUS_FAILURE
    monkeypatch.setattr(Trainer, "d_step", original)
    train(cfg, tmp_path / "run", "auto", handle_signals=False)  # resumes from the checkpoint at step 3
    found, _ = _read(tmp_path)
    assert found["run"][metadata.SESSION_END_INFO_TAG].session_end_info.status == api_pb2.STATUS_SUCCESS
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*.hparams"))) == 1


def test_single_runs_do_not_filter_each_other_out(tiny_config, tmp_path):
    for name, lr in (("a", "1e-4"), ("b", "1e-3")):
        train(load_run_config([tiny_config], ["hooks.fid.every=0", f"train.d_lr={lr}"]), tmp_path / name,
              handle_signals=False)  # fmt: skip
    found, _ = _read(tmp_path)
    for run in ("a", "b"):
        infos = found[run][metadata.EXPERIMENT_TAG].experiment.hparam_infos
        assert infos and all(not h.HasField("domain_discrete") for h in infos)
