"""The domain classifier is trained once per images and ``metrics.classifier`` settings and shared by every run
(gan.build.obtain_classifier): a cache keyed by both, written atomically, guarded by a lock for parallel runs."""

import threading

import pytest
import torch

from gan import build
from gan.build import build_data, load_run_config, obtain_classifier, shared_classifier
from gan.metrics.classifier import classifier_path, load_classifier

CPU = torch.device("cpu")


@pytest.fixture
def trainings(monkeypatch, tmp_path):
    """A fresh classifier cache, and the list of every classifier training (one entry per call)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    calls = []
    real = build.fit_classifier

    def counted(*args, **kwargs):
        calls.append(args[0].metrics.classifier)
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "fit_classifier", counted)
    return calls


def _cfg(tiny_config, *overrides):
    return load_run_config([tiny_config], ["metrics.classifier.steps=3", *overrides])


def _state(path):
    return load_classifier(path)[0].state_dict()


def test_runs_on_the_same_images_and_settings_share_one_training(tiny_config, tmp_path, trainings):
    cfg = _cfg(tiny_config)
    data = build_data(cfg.data)
    _, first = obtain_classifier(tmp_path / "a", data, cfg, CPU)
    _, second = obtain_classifier(tmp_path / "b", data, cfg, CPU)
    assert len(trainings) == 1
    assert first == classifier_path(tmp_path / "a") and second == classifier_path(tmp_path / "b")
    cached = shared_classifier(cfg, data)
    assert cached.is_file() and cached.parent == tmp_path / "xdg" / "spectral-gan" / "classifiers"
    for a, b in zip(_state(first).values(), _state(second).values(), strict=True):  # each run keeps a copy
        assert torch.equal(a, b)
    assert not list(cached.parent.glob(".*tmp"))  # written atomically: no temporary file left behind


@pytest.mark.parametrize(
    "change",
    [
        "metrics.classifier.width=8",  # other settings
        "data.synthetic.seed=7",  # other images
        "data.image_size=8",  # other pixels of the same images
    ],
)
def test_other_settings_or_images_train_their_own(tiny_config, tmp_path, trainings, change):
    cfg, other = _cfg(tiny_config), _cfg(tiny_config, change)
    obtain_classifier(tmp_path / "a", build_data(cfg.data), cfg, CPU)
    obtain_classifier(tmp_path / "b", build_data(other.data), other, CPU)
    assert len(trainings) == 2
    assert shared_classifier(cfg, build_data(cfg.data)) != shared_classifier(other, build_data(other.data))


def test_the_key_ignores_where_the_run_keeps_it_and_the_worker_count(tiny_config, tmp_path, trainings):
    cfg = _cfg(tiny_config)
    obtain_classifier(tmp_path / "a", build_data(cfg.data), cfg, CPU)
    other = _cfg(tiny_config, "data.num_workers=1", "train.seed=5", "model.generator.conv_dim=8")
    obtain_classifier(tmp_path / "b", build_data(other.data), other, CPU)
    assert len(trainings) == 1


def test_the_cache_can_be_switched_off(tiny_config, tmp_path, trainings):
    cfg = _cfg(tiny_config, "metrics.classifier.cache=false")
    data = build_data(cfg.data)
    obtain_classifier(tmp_path / "a", data, cfg, CPU)
    obtain_classifier(tmp_path / "b", data, cfg, CPU)
    assert len(trainings) == 2 and not (tmp_path / "xdg" / "spectral-gan" / "classifiers").exists()
    assert classifier_path(tmp_path / "b").is_file()


def test_evaluation_without_keep_writes_nothing_into_the_run(tiny_config, tmp_path, trainings):
    cfg = _cfg(tiny_config)
    data = build_data(cfg.data)
    _, source = obtain_classifier(tmp_path / "run", data, cfg, CPU, keep=False)
    assert source == shared_classifier(cfg, data) and not (tmp_path / "run").exists()
    obtain_classifier(tmp_path / "run", data, cfg, CPU)  # the training run then takes the cached one
    assert len(trainings) == 1


def test_a_corrupt_cache_entry_is_trained_again(tiny_config, tmp_path, trainings, caplog):
    cfg = _cfg(tiny_config)
    data = build_data(cfg.data)
    obtain_classifier(tmp_path / "a", data, cfg, CPU)
    shared_classifier(cfg, data).write_bytes(b"not a classifier")
    with caplog.at_level("WARNING", logger="gan"):
        obtain_classifier(tmp_path / "b", data, cfg, CPU)
    assert len(trainings) == 2 and "training it again" in caplog.text
    load_classifier(shared_classifier(cfg, data))  # replaced by a good file


def test_parallel_runs_wait_for_the_one_that_trains(tiny_config, tmp_path, trainings):
    cfg = _cfg(tiny_config)
    data = build_data(cfg.data)
    errors = []

    def run(name):
        try:
            obtain_classifier(tmp_path / name, data, cfg, CPU)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"run{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(trainings) == 1
    assert all(classifier_path(tmp_path / f"run{i}").is_file() for i in range(3))


def test_an_unwritable_cache_still_gives_the_run_its_classifier(tiny_config, tmp_path, trainings, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    cfg = _cfg(tiny_config)
    model, source = obtain_classifier(tmp_path / "run", build_data(cfg.data), cfg, CPU)
    assert source == classifier_path(tmp_path / "run") and source.is_file() and len(trainings) == 1


def test_an_explicit_path_is_used_and_trained_there(tiny_config, tmp_path, trainings):
    own = tmp_path / "mine.pt"
    cfg = _cfg(tiny_config, f"metrics.classifier.path={own}")
    data = build_data(cfg.data)
    assert obtain_classifier(tmp_path / "a", data, cfg, CPU)[1] == own and own.is_file()
    assert obtain_classifier(tmp_path / "b", data, cfg, CPU)[1] == own
    assert len(trainings) == 1 and not classifier_path(tmp_path / "a").exists()
