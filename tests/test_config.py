"""Strict, typed config loading: defaults, base.yaml, overrides and every kind of bad input."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from gan.build import load_run_config
from gan.config import Config, config_to_dict, dump_config, load_config, read_yaml
from gan.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_yaml_lists_every_key_with_its_default():
    assert read_yaml(CONFIGS / "base.yaml") == config_to_dict(Config())


def test_base_yaml_has_a_comment_for_every_key():
    previous_was_comment = False
    for line in (CONFIGS / "base.yaml").read_text().splitlines():
        stripped = line.strip()
        is_leaf = ":" in stripped and not stripped.startswith("#") and stripped.split("#")[0].split(":", 1)[1].strip()
        if is_leaf:
            assert "#" in line or previous_was_comment, f"undocumented key in base.yaml: {line}"
        previous_was_comment = stripped.startswith("#")


@pytest.mark.parametrize("name", ["base.yaml", "default.yaml", "celeba.yaml", "folder.yaml"])
def test_shipped_configs_load(name):
    load_config([CONFIGS / name])


def test_files_layer_and_overrides_win(tmp_path):
    a = _write(tmp_path, "train:\n  batch_size: 4\n  steps: 10\n", "a.yaml")
    b = _write(tmp_path, "train:\n  steps: 20\n", "b.yaml")
    cfg = load_config([a, b], ["train.g_lr=3e-4", "model.generator.norm=batch_instance"])
    assert (cfg.train.batch_size, cfg.train.steps, cfg.train.g_lr) == (4, 20, 3e-4)
    assert cfg.model.generator.norm == "batch_instance"


def test_pyyaml_exponent_without_dot_is_a_float(tmp_path):
    cfg = load_config([_write(tmp_path, "train:\n  d_lr: 1e-4\n")])
    assert cfg.train.d_lr == pytest.approx(1e-4)


def test_dump_round_trips(tmp_path):
    cfg = load_config([CONFIGS / "default.yaml"], ["model.generator.norm_options={affine: false}"])
    again = load_config([_write(tmp_path, dump_config(cfg))])
    assert again == cfg


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  batch_sze: 4\n", "unknown key 'train.batch_sze' (did you mean 'train.batch_size'?)"),
        ("trian:\n  steps: 4\n", "unknown key 'trian'"),
        ("train:\n  batch_size: four\n", "train.batch_size: expected an integer, got 'four'"),
        ("train:\n  batch_size: 2.5\n", "train.batch_size: expected an integer"),
        ("train:\n  progress: 3\n", "train.progress: expected true or false"),
        ("train:\n  batch_size: 0\n", "train.batch_size: must be >= 1, got 0"),
        ("train:\n  beta1: 1.5\n", "train.beta1: must be <= 1.0"),
        ("train:\n  d_lr: .nan\n", "train.d_lr: expected a finite number"),
        ("model:\n  generator:\n    norm: instnace\n", "unknown name 'instnace' (did you mean 'instance'?)"),
        ("loss:\n  adversarial: wasserstein\n", "loss.adversarial: unknown name 'wasserstein'"),
        ("data:\n  synthetic:\n    domains: [palette, neon]\n", "data.synthetic.domains: unknown name 'neon'"),
        ("train: 5\n", "'train' is a section; expected a mapping"),
        ("model:\n  generator:\n    norm_options: {afine: true}\n", "norm 'instance' has no option 'afine'"),
        ("data:\n  image_size: 36\n", "data.image_size: 36 must be divisible"),
        (
            "model:\n  generator:\n    norm: group\n    norm_options: {num_groups: 48}\n",
            "model.generator.norm_options:",
        ),
        ("model:\n  discriminator:\n    norm: batch\n    norm_options: {momentum: -1}\n", "momentum"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("train: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_run_config([path])  # the config checks plus those that need the models (gan.build)
    message = str(info.value)
    assert str(path) in message
    assert needle in message
    assert "\n" not in message


def test_bad_override_names_the_override():
    with pytest.raises(
        ConfigError, match=r"--set train.stepz=3: unknown key 'train.stepz' \(did you mean 'train.steps'"
    ):
        load_config([], ["train.stepz=3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config([], ["train.steps"])


def test_python_object_tag_is_refused(tmp_path):
    path = _write(tmp_path, "train:\n  steps: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([path])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config([tmp_path / "nope.yaml"])


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 3  # type: ignore[misc]


def test_read_yaml_uses_safe_loading(tmp_path):
    path = _write(tmp_path, "a: !!python/name:os.system\n")
    with pytest.raises(ConfigError):
        read_yaml(path)
    assert yaml.safe_load("a: 1") == {"a": 1}
