"""YAML configs -> frozen, typed dataclasses, loaded strictly (unknown key, wrong type, bad value = clear error).

The dataclass defaults below are the single source of defaults; ``configs/base.yaml`` lists the same keys with a
comment each, and a test keeps the two identical.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gan.data.links import FOLLOW_LINKS
from gan.data.synthetic import STYLES
from gan.errors import ConfigError, special_file
from gan.losses import ADVERSARIAL_LOSSES
from gan.norms import NORMS, check_norm_options

REPO_ROOT = Path(__file__).resolve().parent.parent


def _config_folder() -> Path:
    """The shipped configs: ``configs/`` of a source checkout, else the copy a wheel installs as ``gan/configs/``
    (package data of ``gan.configs``, see pyproject.toml)."""
    if (REPO_ROOT / "configs" / "default.yaml").is_file():
        return REPO_ROOT / "configs"
    return Path(__file__).resolve().parent / "configs"


CONFIG_DIR = _config_folder()
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
HAIR_COLOURS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]  # CelebA: an image has at most one


def _opt(
    default: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    choices: Any = None,
) -> Any:
    """A dataclass field with range or choice checks (``above``: strictly greater). ``choices`` is a tuple or a
    callable returning names."""
    meta = {"min": min, "max": max, "above": above, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# Upper bounds of integer keys (also given in configs/base.yaml): far above any real run, low enough that a typo
# (an extra digit, 2**64) is a one-line error instead of an overflow deep in torch or an allocation of terabytes.
SEED_MAX = 2**32 - 1  # the seed range every random generator here accepts
STEPS_MAX = 1_000_000_000


# ----------------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class SyntheticConfig:
    domains: list[str] = _opt(["palette", "outline", "texture", "night"], choices=STYLES.names)
    images_per_domain: int = _opt(512, min=1, max=100_000)
    test_images_per_domain: int = _opt(64, min=1, max=100_000)
    seed: int = _opt(0, min=0, max=SEED_MAX)


@dataclass(frozen=True)
class FolderConfig:
    root: str = ""
    domains: list[str] = _opt([])
    split: str = _opt("ratio", choices=("ratio", "folders"))
    test_ratio: float = _opt(0.1, min=0.0, max=0.9)
    split_seed: int = _opt(1234, min=0, max=SEED_MAX)


@dataclass(frozen=True)
class CelebAConfig:
    image_dir: str = ""
    attr_file: str = ""
    attributes: list[str] = _opt(["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"])
    exclusive_groups: list[list[str]] = _opt([HAIR_COLOURS])
    test_count: int = _opt(2000, min=0, max=10_000_000)
    split_seed: int = _opt(1234, min=0, max=SEED_MAX)


@dataclass(frozen=True)
class DataConfig:
    source: str = _opt("synthetic", choices=("synthetic", "folder", "celeba"))
    image_size: int = _opt(128, min=8, max=4096)
    crop_size: int = _opt(0, min=0, max=8192)
    num_workers: int = _opt(0, min=0, max=64)
    skip_bad_images: bool = False
    follow_links: str = _opt("inside", choices=FOLLOW_LINKS)
    check_images: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    folder: FolderConfig = field(default_factory=FolderConfig)
    celeba: CelebAConfig = field(default_factory=CelebAConfig)


# ---------------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class GeneratorConfig:
    conv_dim: int = _opt(64, min=1, max=1024)
    repeat_num: int = _opt(6, min=0, max=64)
    norm: str = _opt("instance", choices=NORMS.names)
    norm_options: dict[str, Any] = _opt({})


@dataclass(frozen=True)
class SpectralNormConfig:
    enabled: bool = True
    n_power_iterations: int = _opt(1, min=1, max=100)
    eps: float = _opt(1e-12, above=0.0)
    update: str = _opt("step", choices=("step", "forward"))


@dataclass(frozen=True)
class DiscriminatorConfig:
    conv_dim: int = _opt(64, min=1, max=1024)
    repeat_num: int = _opt(6, min=1, max=12)
    norm: str = _opt("none", choices=NORMS.names)
    norm_options: dict[str, Any] = _opt({})
    spectral_norm: SpectralNormConfig = field(default_factory=SpectralNormConfig)


@dataclass(frozen=True)
class ModelConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    sync_batchnorm: bool = False


# ----------------------------------------------------------------------------------------------------------- loss
@dataclass(frozen=True)
class LossConfig:
    adversarial: str = _opt("wgan", choices=ADVERSARIAL_LOSSES.names)
    lambda_cls: float = _opt(1.0, min=0.0)
    lambda_rec: float = _opt(10.0, min=0.0)
    lambda_gp: float = _opt(10.0, min=0.0)
    lambda_r1: float = _opt(0.0, min=0.0)


# ---------------------------------------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainConfig:
    steps: int = _opt(200000, min=1, max=1_000_000_000)
    batch_size: int = _opt(16, min=1, max=65_536)
    n_critic: int = _opt(5, min=1, max=1000)
    g_lr: float = _opt(1e-4, min=0.0)
    d_lr: float = _opt(1e-4, min=0.0)
    beta1: float = _opt(0.5, min=0.0, max=1.0)
    beta2: float = _opt(0.999, min=0.0, max=1.0)
    lr_decay_steps: int = _opt(100000, min=0, max=1_000_000_000)
    gate_lr_multiplier: float = _opt(10.0, min=0.0)
    g_ema_decay: float = _opt(0.0, min=0.0, max=1.0)
    seed: int = _opt(0, min=0, max=SEED_MAX)
    device: str = _opt("auto", choices=("auto", "cpu", "cuda"))
    precision: str = _opt("fp32", choices=("fp32", "bf16", "fp16"))
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    progress: bool = True


# ---------------------------------------------------------------------------------------------------------- hooks
@dataclass(frozen=True)
class ScalarsHookConfig:
    every: int = _opt(10, min=0, max=STEPS_MAX)


@dataclass(frozen=True)
class ImagesHookConfig:
    every: int = _opt(1000, min=0, max=STEPS_MAX)
    num_images: int = _opt(8, min=1, max=1024)


@dataclass(frozen=True)
class SigmaHookConfig:
    every: int = _opt(100, min=0, max=STEPS_MAX)


@dataclass(frozen=True)
class LipschitzHookConfig:
    every: int = _opt(500, min=0, max=STEPS_MAX)
    num_images: int = _opt(16, min=1, max=10_000)
    jacobian: bool = True


@dataclass(frozen=True)
class NormsHookConfig:
    every: int = _opt(100, min=0, max=STEPS_MAX)


@dataclass(frozen=True)
class PairedL1HookConfig:
    every: int = _opt(1000, min=0, max=STEPS_MAX)
    num_images: int = _opt(64, min=1, max=100_000)


@dataclass(frozen=True)
class FidHookConfig:
    every: int = _opt(1000, min=0, max=STEPS_MAX)
    num_images: int = _opt(64, min=2, max=100_000)
    extractor: str = _opt("auto", choices=("auto", "inception", "classifier"))


@dataclass(frozen=True)
class CheckpointHookConfig:
    every: int = _opt(10000, min=0, max=STEPS_MAX)
    keep: int = _opt(3, min=1, max=10_000)


@dataclass(frozen=True)
class NanGuardHookConfig:
    every: int = _opt(10, min=0, max=STEPS_MAX)


WATCHED_METRICS = (
    "auto",
    "",
    "eval/paired_l1",
    "eval/fid/mean",
    "eval/kid/mean",
    "eval/classifier_fd/mean",
    "eval/classifier_kd/mean",
)


@dataclass(frozen=True)
class StabilityHookConfig:
    every: int = _opt(500, min=0, max=STEPS_MAX)
    num_images: int = _opt(64, min=2, max=100_000)
    stop: bool = True
    gap_limit: float = _opt(1000.0, min=0.0)
    grad_norm_limit: float = _opt(1000.0, min=0.0)
    metric: str = _opt("auto", choices=WATCHED_METRICS)
    metric_factor: float = _opt(3.0, min=0.0)
    collapse_below: float = _opt(0.2, min=0.0)
    spectrum_top: int = _opt(3, min=1, max=1024)


@dataclass(frozen=True)
class HooksConfig:
    scalars: ScalarsHookConfig = field(default_factory=ScalarsHookConfig)
    images: ImagesHookConfig = field(default_factory=ImagesHookConfig)
    sigma: SigmaHookConfig = field(default_factory=SigmaHookConfig)
    lipschitz: LipschitzHookConfig = field(default_factory=LipschitzHookConfig)
    norms: NormsHookConfig = field(default_factory=NormsHookConfig)
    paired_l1: PairedL1HookConfig = field(default_factory=PairedL1HookConfig)
    fid: FidHookConfig = field(default_factory=FidHookConfig)
    checkpoint: CheckpointHookConfig = field(default_factory=CheckpointHookConfig)
    nan_guard: NanGuardHookConfig = field(default_factory=NanGuardHookConfig)
    stability: StabilityHookConfig = field(default_factory=StabilityHookConfig)


# -------------------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class ClassifierMetricConfig:
    steps: int = _opt(1000, min=1, max=10_000_000)
    batch_size: int = _opt(64, min=1, max=65_536)
    lr: float = _opt(1e-3, min=0.0)
    width: int = _opt(32, min=1, max=1024)
    seed: int = _opt(0, min=0, max=SEED_MAX)
    path: str = ""  # one file for every run that sets it (trained there if absent); "" = the run's classifier.pt
    cache: bool = True  # share one classifier per images and settings ($XDG_CACHE_HOME/spectral-gan/classifiers)


@dataclass(frozen=True)
class MetricsConfig:
    inception_weights: str = ""
    protocol: str = _opt("pytorch_fid", choices=("pytorch_fid", "tf1"))
    fast_inception: bool = True
    batch_size: int = _opt(50, min=1, max=65_536)
    real_split: str = _opt("train", choices=("train", "test"))
    stats_cache: str = ""
    kid_subsets: int = _opt(100, min=1, max=10_000)
    kid_subset_size: int = _opt(1000, min=2, max=100_000)
    classifier: ClassifierMetricConfig = field(default_factory=ClassifierMetricConfig)


# ---------------------------------------------------------------------------------------------------------- study
@dataclass(frozen=True)
class StudyConfig:
    name: str = ""
    labels: dict[str, Any] = _opt({})
    hparams: list[str] = _opt([])


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    study: StudyConfig = field(default_factory=StudyConfig)


# -------------------------------------------------------------------------------------------------------- loading
# Limits on every YAML text we read (config files, sweep files, ``--set`` values), far above any real config; they
# keep a hostile or mistaken file (a checkpoint given as --config, an alias bomb) to a one-line error.
MAX_YAML_BYTES = 1 << 20  # 1 MiB; configs/ files are a few KiB
MAX_YAML_DEPTH = 32  # nested mappings/lists; base.yaml is 4 deep
MAX_YAML_ALIAS_NODES = 10_000  # nodes reached through aliases (*name), counted expanded: stops "billion laughs"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlLimitError(yaml.YAMLError):
    """A YAML text breaks one of our limits or repeats a key; the message is one line, without the source."""


class _SafeLoader(yaml.SafeLoader):
    """safe_load's loader, plus the limits above and duplicate keys checked while nodes are composed.

    An alias is composed as a reference to its anchor's node, so an alias bomb is tiny as nodes; what explodes is
    everything that walks the result afterwards. Each node's expanded size is therefore tracked during composition
    (before construction), and an alias adds its anchor's expanded size to a budget.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # nodes so far, aliases counted as the nodes they stand for
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size, once composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            return self._compose_alias(parent, index)
        event = self.peek_event()
        nested = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
        if nested and self._depth >= MAX_YAML_DEPTH:  # checked before PyYAML recurses into the collection
            line = event.start_mark.line + 1
            raise YamlLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels (MAX_YAML_DEPTH) at line {line}")
        self._depth += nested
        before = self._expanded
        self._expanded += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= nested
        if event.anchor is not None:  # an alias of this node will count this many nodes
            self._sizes[id(node)] = self._expanded - before
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node)
        return node

    def _compose_alias(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        target = self.anchors.get(event.anchor)
        if target is not None:  # an unknown anchor is PyYAML's own error
            size = self._sizes.get(id(target))
            if size is None:
                raise YamlLimitError(f"alias *{event.anchor} at line {event.start_mark.line + 1} refers to itself")
            self._expanded += size
            self._alias_nodes += size
            if self._alias_nodes > MAX_YAML_ALIAS_NODES:
                raise YamlLimitError(
                    f"aliases expand to more than {MAX_YAML_ALIAS_NODES} nodes (MAX_YAML_ALIAS_NODES) "
                    f"at line {event.start_mark.line + 1}; alias bombs are refused"
                )
        return super().compose_node(parent, index)


def _check_duplicate_keys(node: yaml.MappingNode) -> None:
    """Refuse a key written twice in one mapping (PyYAML keeps the last one silently). Keys brought in by a merge
    key (``<<: *base``) may be overridden, as YAML intends; only the mapping's own scalar keys are compared."""
    seen: dict[tuple[str, str], yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        first = seen.setdefault((key_node.tag, key_node.value), key_node)
        if first is not key_node:
            lines = f"lines {first.start_mark.line + 1} and {key_node.start_mark.line + 1}"
            raise YamlLimitError(f"duplicate key {key_node.value!r} ({lines})")


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` of ``text`` under the limits above (YamlLimitError, or PyYAML's own YAMLError)."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlLimitError(f"longer than {MAX_YAML_BYTES} bytes (MAX_YAML_BYTES)")
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


def _read_text(path: Path) -> str:
    """The file's text: UTF-8 under MAX_YAML_BYTES, else a ConfigError saying what the file looks like."""
    kind = special_file(path)
    if kind is not None:  # reading a pipe would wait for a writer for ever
        raise ConfigError(f"{path}: is {kind}, not a config file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_YAML_BYTES + 1)  # never more, even from a device or a pipe
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES} bytes (MAX_YAML_BYTES); is it a config file?")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: is UTF-16 text; save it as UTF-8")
    if b"\x00" in raw:
        raise ConfigError(f"{path}: not a text file (it contains NUL bytes); expected a YAML config")
    try:
        return raw.decode("utf-8-sig")  # a UTF-8 byte order mark (as some Windows editors write) is accepted
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{raw[exc.start]:02x} at offset {exc.start}); expected a YAML config"
        ) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping like ``yaml.safe_load``, under the MAX_YAML_* limits and refusing duplicate keys; every
    failure is a one-line ConfigError naming the file."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = _parse_yaml(text)
    except YamlLimitError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {first[0] if first else exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and not _is_free_dict(out, key):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _is_free_dict(section: dict[str, Any], key: str) -> bool:
    # norm_options-style dicts are replaced as a whole; sections are merged key by key.
    return key.endswith("_options")


def config_keys() -> list[str]:
    """Every dotted config key (``train.seed``, ``model.generator.norm_options``, ...)."""
    return _all_keys(Config)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        keys.append(name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_all_keys(hints[f.name], name + "."))
    return keys


_FLOAT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _coerce(value: Any, tp: Any, where: str, meta: Mapping[str, Any]) -> Any:
    """Check ``value`` against the annotated type ``tp`` and the field's range/choices; return the typed value."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            value = float(value)  # PyYAML reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    elif origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        value = [_coerce(v, item_tp, f"{where}[{i}]", {}) for i, v in enumerate(value)]
    elif origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping of names to values, got {value!r}")
        value = dict(value)
    else:  # pragma: no cover - a schema error, not a user error
        raise TypeError(f"unsupported config type {tp!r} at {where}")
    _check_range(value, where, meta)
    return value


def _check_range(value: Any, where: str, meta: Mapping[str, Any]) -> None:
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    above = meta.get("above")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: must be >= {lo}, got {value!r}")
    if above is not None and value <= above:
        raise ConfigError(f"{where}: must be > {above}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: must be <= {hi}, got {value!r}")
    if choices is not None:
        valid = list(choices() if callable(choices) else choices)
        for item in value if isinstance(value, list) else [value]:
            if item not in valid:
                hint = difflib.get_close_matches(str(item), valid, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"{where}: unknown name {item!r}{extra}; choose one of: {', '.join(valid)}")


def _build(cls: type, data: Mapping[str, Any], prefix: str, source: Callable[[str], str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            full = f"{prefix}{key}"
            hint = difflib.get_close_matches(full, _all_keys(Config), n=1, cutoff=0.6)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{source(full)}: unknown key {full!r}{extra}")
    kwargs = {}
    for name, f in names.items():
        if name not in data:
            continue
        full, tp, value = f"{prefix}{name}", hints[name], data[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source(full)}: {full!r} is a section; expected a mapping, got {value!r}")
            kwargs[name] = _build(tp, value, full + ".", source)
        else:
            kwargs[name] = _coerce(value, tp, f"{source(full)}: {full}", f.metadata)
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {text}: expected section.key=value")
    try:
        value = _parse_yaml(raw) if raw.strip() else ""
    except YamlLimitError as exc:  # a duplicate key or an alias bomb is an error, not a string
        raise ConfigError(f"--set {text}: {exc}") from None
    except yaml.YAMLError:
        value = raw
    return parts, value


Check = Callable[["Config"], "tuple[str, str] | None"]


def load_config(
    files: list[str | Path] | None = None,
    overrides: list[str] | None = None,
    base: Mapping[str, Any] | None = None,
    base_name: str = "checkpoint",
    checks: tuple[Check, ...] = (),
) -> Config:
    """Merge ``base`` (e.g. a checkpoint's config), YAML ``files`` (in order) and ``--set`` ``overrides`` over the
    defaults into a validated Config. ``checks`` are further validations (``gan.build`` passes one that builds
    the models on the meta device); each returns ``(key, problem)`` or None, reported like every other error."""
    merged: dict[str, Any] = dict(base or {})
    origin: dict[str, str] = dict.fromkeys(_flatten(merged), base_name)  # dotted key -> source, for messages
    for path in files or []:
        data = read_yaml(path)
        merged = _deep_merge(merged, data)
        for key in _flatten(data):
            origin[key] = str(path)
    for text in overrides or []:
        parts, value = _parse_override(text)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        merged = _deep_merge(merged, nested)
        for key in _flatten(nested):
            origin[key] = f"--set {text}"

    def source(key: str) -> str:
        for candidate in (key, *(key.rsplit(".", i)[0] for i in range(1, key.count(".") + 1))):
            if candidate in origin:
                return origin[candidate]
        return "config"

    config = _build(Config, merged, "", source)
    _check_consistency(config, source)
    for check in checks:
        problem = check(config)
        if problem is not None:
            key, text = problem
            raise ConfigError(f"{source(key)}: {key}: {text}")
    return config


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, Mapping) and not key.endswith("_options"):
            keys.extend(_flatten(value, full + "."))
    return keys


def _check_consistency(cfg: Config, source: Callable[[str], str]) -> None:
    """Checks that involve more than one key or need a factory's signature."""
    syn = cfg.data.synthetic
    if len(set(syn.domains)) != len(syn.domains) or len(syn.domains) < 2:
        key = "data.synthetic.domains"
        raise ConfigError(f"{source(key)}: {key}: needs at least two different styles, got {syn.domains!r}")
    size = cfg.data.image_size
    needed = 2**cfg.model.discriminator.repeat_num
    if size % needed or size % 4:
        key = "data.image_size"
        raise ConfigError(
            f"{source(key)}: {key}: {size} must be divisible by 4 and by 2**model.discriminator.repeat_num = {needed}"
        )
    seen: dict[str, int] = {}
    for i, group in enumerate(cfg.data.celeba.exclusive_groups):
        for name in group:
            if name in seen and seen[name] != i:
                key = "data.celeba.exclusive_groups"
                raise ConfigError(f"{source(key)}: {key}: {name!r} is in more than one group")
            seen[name] = i
    known = set(_all_keys(Config))
    for name in cfg.study.hparams:
        if name not in known or name.startswith("study."):
            key = "study.hparams"
            hint = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{source(key)}: {key}: {name!r} is not a config key{extra}")
    for net in ("generator", "discriminator"):
        net_cfg = getattr(cfg.model, net)
        problem = check_norm_options(net_cfg.norm, net_cfg.norm_options)
        if problem:
            key = f"model.{net}.norm_options"
            raise ConfigError(f"{source(key)}: {key}: {problem}")


def lr_schedule_problem(cfg: Config) -> tuple[str, str] | None:
    """A training-only check (``checks=`` of :func:`load_config`): the linear decay must fit into the run.

    Refused rather than adapted: the schedule is part of the experiment, and a silently shortened decay would make
    runs of one study differ in a setting nobody chose. Checkpoints of older runs still load for evaluation.
    """
    t = cfg.train
    if t.lr_decay_steps <= t.steps:
        return None
    return "train.lr_decay_steps", (
        f"{t.lr_decay_steps} exceeds train.steps = {t.steps}, so the learning rate would start at "
        f"{t.steps / t.lr_decay_steps:.1%} of its value; set train.lr_decay_steps to at most train.steps "
        f"(e.g. --set train.lr_decay_steps={t.steps // 2})"
    )


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (what YAML and checkpoints store)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text that ``load_config`` reads back to the same Config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
