"""Strict, typed config loading: defaults, base.yaml, overrides and every kind of bad input."""

import dataclasses
import time
from pathlib import Path

import pytest
import torch
import yaml

from gan.build import load_run_config
from gan.cli import train_main
from gan.config import (
    MAX_YAML_ALIAS_NODES,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    Config,
    config_to_dict,
    dump_config,
    load_config,
    read_yaml,
)
from gan.errors import ConfigError
from gan.sweep import load_sweep

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


# ------------------------------------------------------------------ hostile files: limits, encodings, duplicates
def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """'Billion laughs': each level is a mapping of ``width`` aliases of the level below (``width**levels`` leaves)."""
    lines = ["l0: &l0 " + "[" + ",".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(width)) + "}")
    return "\n".join(lines) + "\n"


def _read_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message


def test_alias_bomb_fails_fast_naming_the_limit(tmp_path):
    text = _alias_bomb()
    assert len(text) < 1000  # a small file that expands to 9**9 leaves
    start = time.perf_counter()
    message = _read_error(_write(tmp_path, text))
    assert time.perf_counter() - start < 2
    assert f"more than {MAX_YAML_ALIAS_NODES} nodes (MAX_YAML_ALIAS_NODES)" in message


def test_a_few_aliases_are_still_allowed(tmp_path):
    data = read_yaml(_write(tmp_path, _alias_bomb(levels=3, width=3)))
    assert data["l2"]["k0"] == {"k0": ["lol"] * 3, "k1": ["lol"] * 3, "k2": ["lol"] * 3}
    merged = read_yaml(_write(tmp_path, "a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n"))  # a merge key may override
    assert merged["b"] == {"x": 3, "y": 2}


def test_self_referencing_alias_is_refused(tmp_path):
    assert "refers to itself" in _read_error(_write(tmp_path, "a: &a {b: *a}\n"))


@pytest.mark.parametrize("text", ["a: " + "[" * 5000 + "]" * 5000 + "\n", "a: " + "{b: " * 40 + "1" + "}" * 40])
def test_deep_nesting_is_refused(tmp_path, text):
    message = _read_error(_write(tmp_path, text))
    assert f"nested deeper than {MAX_YAML_DEPTH} levels (MAX_YAML_DEPTH)" in message


def test_nesting_up_to_the_limit_loads_and_one_more_level_does_not(tmp_path):
    lists = MAX_YAML_DEPTH - 1  # the top-level mapping is the first level
    data = read_yaml(_write(tmp_path, "a: " + "[" * lists + "1" + "]" * lists + "\n"))["a"]
    for _ in range(lists - 1):
        data = data[0]
    assert data == [1]
    too_deep = _write(tmp_path, "a: " + "[" * (lists + 1) + "1" + "]" * (lists + 1) + "\n")
    assert "MAX_YAML_DEPTH" in _read_error(too_deep)


def test_file_over_the_size_limit_is_refused(tmp_path):
    path = _write(tmp_path, "# " + "x" * MAX_YAML_BYTES + "\n")
    assert f"larger than {MAX_YAML_BYTES} bytes (MAX_YAML_BYTES)" in _read_error(path)


@pytest.mark.parametrize(
    "data, needle",
    [
        ("train:\n  steps: caf\xe9\n".encode("latin-1"), "not a UTF-8 text file (byte 0xe9 at offset 19)"),
        ("train:\n  steps: 3\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
        ("train:\n  steps: 3\n".encode("utf-16-le"), "not a text file (it contains NUL bytes)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "not a text file"),
        (b"\xff\xd8\xff\xe0 JFIF", "not a UTF-8 text file (byte 0xff at offset 0)"),
    ],
)
def test_files_that_are_not_utf8_text_are_refused(tmp_path, data, needle):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    assert needle in _read_error(path)


def test_torch_checkpoint_as_config_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"G": torch.zeros(4), "step": 3}, path)
    assert "not a text file" in _read_error(path)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbftrain:\n  steps: 7\n")
    assert load_config([path]).train.steps == 7


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  steps: 3\nmodel: {}\ntrain:\n  batch_size: 4\n", "duplicate key 'train' (lines 1 and 4)"),
        ("train:\n  steps: 3\n  g_lr: 1e-4\n  steps: 4\n", "duplicate key 'steps' (lines 2 and 4)"),
        ("model:\n  generator:\n    norm_options: {affine: 1, affine: 0}\n", "duplicate key 'affine' (lines 3 and 3)"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert str(info.value) == f"{path}: {needle}"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.generator.norm_options={affine: true, affine: false}", "duplicate key 'affine'"),
        ("model.generator.norm_options=" + _alias_bomb().replace("\n", ", ").join("{}"), "MAX_YAML_ALIAS_NODES"),
        ("model.generator.norm_options={a: &a [1, 1], b: [*a, *a]}", "has no option 'a'"),  # small aliases: fine
    ],
)
def test_override_with_duplicate_key_or_alias_bomb(override, needle):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config([], [override])
    assert time.perf_counter() - start < 2
    assert str(info.value).startswith(f"--set {override}: ")
    assert needle in str(info.value)


def test_sweep_file_goes_through_the_same_limits(tmp_path):
    path = _write(tmp_path, "name: s\nname: t\n", "sweep.yaml")
    with pytest.raises(ConfigError, match=r"duplicate key 'name' \(lines 1 and 2\)"):
        load_sweep(path, tmp_path / "study")


@pytest.mark.parametrize("kind", ["bomb", "binary", "duplicate"])
def test_cli_reports_hostile_config_in_one_line(tmp_path, capsys, kind):
    path = tmp_path / "c.yaml"
    if kind == "bomb":
        path.write_text(_alias_bomb())
    elif kind == "binary":
        torch.save({"G": torch.zeros(4)}, path)
    else:
        path.write_text("train:\n  steps: 3\ntrain:\n  steps: 4\n")
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    assert train_main(["--config", str(path), "--run-dir", str(run_dir)]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {path}: ")
    assert not run_dir.exists()


def test_every_shipped_yaml_loads_through_the_hardened_reader():
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert len(files) >= 10 and any("sweeps" in f.parts for f in files) and any("ablations" in f.parts for f in files)
    for path in files:
        assert isinstance(read_yaml(path), dict), path
        if "sweeps" not in path.parts:
            load_config([path])


def _int_keys(dc=None, prefix=""):
    import dataclasses
    import typing

    from gan.config import Config

    dc = dc or Config
    hints = typing.get_type_hints(dc)
    for f in dataclasses.fields(dc):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _int_keys(hints[f.name], f"{prefix}{f.name}.")
        elif hints[f.name] is int:
            yield f"{prefix}{f.name}", f.metadata.get("max")


def test_every_integer_key_has_an_upper_bound_stated_in_base_yaml():
    from gan.config import CONFIG_DIR

    keys = dict(_int_keys())
    assert len(keys) > 40 and all(bound is not None for bound in keys.values()), keys
    base = (CONFIG_DIR / "base.yaml").read_text()
    for key in keys:
        line = next(line for line in base.splitlines() if line.strip().startswith(key.split(".")[-1] + ":"))
        assert "[max " in line, key


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.seed=18446744073709551616", "train.seed: must be <= 4294967295"),  # 2**64: torch's overflow before
        ("train.batch_size=1000000000000000000", "train.batch_size: must be <= 65536"),
        ("data.image_size=1099511627776", "data.image_size: must be <= 4096"),
        ("model.generator.conv_dim=1000000000000", "model.generator.conv_dim: must be <= 1024"),
        ("data.synthetic.images_per_domain=1000000000000", "data.synthetic.images_per_domain: must be <= 100000"),
        ("model.generator.repeat_num=1000000", "model.generator.repeat_num: must be <= 64"),
        ("model.discriminator.spectral_norm.n_power_iterations=1000000000000", "n_power_iterations: must be <= 100"),
        ("data.synthetic.seed=18446744073709551616", "data.synthetic.seed: must be <= 4294967295"),
    ],
)
def test_huge_integers_are_one_line(override, needle, tmp_path, capsys):
    from gan.cli import train_main

    run = tmp_path / "run"
    assert train_main(["--set", override, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not run.exists()
