"""The malformed inputs of tests/test_fuzz.py: one ``Case`` per input, each with the files it needs, the command
line that reads them and the words its one-line error must contain.

Every case runs in a fresh working directory that holds ``tiny.yaml`` (tests/conftest.py's TINY) and whatever the
case's ``files`` function writes; paths on the command line are relative to it. ``Artefacts`` are made once per
module (a real tiny run's checkpoints, a real classifier file, FID weights on request) and copied in by ``files``.
The integer, float, bool, choice, list, mapping and section cases are generated from gan.config's schema, so every
key added there is fuzzed without editing this file.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
import shutil
import struct
import typing
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from gan.config import MAX_YAML_ALIAS_NODES, MAX_YAML_BYTES, MAX_YAML_DEPTH, Config


@dataclass
class Artefacts:
    """Real files made once per module: a tiny run (``run/checkpoints/{step_00000001,step_00000002,last}.pt``),
    its classifier file and, for the .npz cases only, FID Inception weights (random values, the real layout)."""

    run: Path
    classifier: Path
    inception: Path | None  # set for the cases that need it (making the file takes seconds)

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "last.pt"

    def classifier_payload(self) -> dict[str, Any]:
        return torch.load(self.classifier, map_location="cpu", weights_only=True)


Files = Callable[[Path, Artefacts], None]


@dataclass(frozen=True)
class Case:
    """One malformed input: ``cli`` (train or evaluate) run with ``argv`` in a folder prepared by ``files`` must
    exit with code 2 and one line ``error: ...`` containing every one of ``needles``, writing nothing. (Cases the
    code does not pass yet are listed with what happens today in tests/test_fuzz.py's XFAIL.)"""

    id: str
    cli: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    files: Files | None = None
    needs: frozenset[str] = field(default_factory=frozenset)  # "inception", "no-cuda", "not-root"
    timeout: float = 60.0  # seconds before the case counts as hanging

    @property
    def category(self) -> str:
        return self.id.split("-", 1)[0]


TRAIN = ("--config", "tiny.yaml", "--run-dir", "run")  # a train case that got through would train TINY, not 4000 steps
CKPT = "run/checkpoints/last.pt"


# ------------------------------------------------------------------------------------------------------ writers
def write(name: str, data: bytes | str) -> Files:
    def files(tmp: Path, art: Artefacts) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)

    return files


def both(*parts: Files | None) -> Files:
    def files(tmp: Path, art: Artefacts) -> None:
        for part in parts:
            if part is not None:
                part(tmp, art)

    return files


def mkdir(name: str) -> Files:
    return lambda tmp, art: (tmp / name).mkdir(parents=True, exist_ok=True)


def fifo(name: str) -> Files:
    def files(tmp: Path, art: Artefacts) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(tmp / name)

    return files


def copy_run() -> Files:
    """The real run's checkpoints folder as ``run/checkpoints/`` (no logs)."""

    def files(tmp: Path, art: Artefacts) -> None:
        shutil.copytree(art.run / "checkpoints", tmp / "run" / "checkpoints")

    return files


def checkpoint_as(name: str, change: Callable[[bytes, Artefacts], bytes | None]) -> Files:
    """The real last.pt at ``name``, its bytes passed through ``change`` (None: no file at all)."""

    def files(tmp: Path, art: Artefacts) -> None:
        data = change(art.checkpoint.read_bytes(), art)
        if data is not None:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)

    return files


def saved(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def png(size: int = 16, seed: int = 0) -> bytes:
    rng = np.random.RandomState(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` RGB pixels (10 Gpixel by default), with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def noise(count: int, seed: int = 7) -> bytes:
    return bytes(random.Random(seed).getrandbits(8) for _ in range(count))


def flip_tensor_byte(data: bytes) -> bytes:
    """``data`` (a torch.save zip) with one bit flipped in the middle of its largest tensor's bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    offset = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def nested(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def yaml_of(key: str, value: Any) -> str:
    return yaml.safe_dump(nested(key, value), sort_keys=False)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class Key:
    name: str
    tp: Any
    meta: dict[str, Any]
    section: bool


def schema(cls: type = Config, prefix: str = "") -> list[Key]:
    """Every dotted key of gan.config.Config with its type and its range/choice metadata."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name, tp = f"{prefix}{f.name}", hints[f.name]
        section = dataclasses.is_dataclass(tp)
        keys.append(Key(name, tp, dict(f.metadata), section))
        if section:
            keys.extend(schema(tp, name + "."))
    return keys


def config_case(id: str, key: str, value: Any) -> Case:
    """``value`` for ``key`` in a config file layered on top of TINY: the error names the file and the key."""
    return Case(id, "train", (*TRAIN, "--config", "c.yaml"), ("c.yaml", key), write("c.yaml", yaml_of(key, value)))


def set_case(id: str, key: str, text: str) -> Case:
    return Case(id, "train", (*TRAIN, "--set", f"{key}={text}"), (key,))


def schema_cases() -> list[Case]:
    """Out-of-range, huge, wrong-typed and unknown-name values for every key of the schema."""
    cases = []
    for key in schema():
        k, lo, hi, above = key.name, key.meta.get("min"), key.meta.get("max"), key.meta.get("above")
        if key.section:
            cases.append(config_case(f"section-{k}-scalar", k, 3))
        elif key.tp is int:
            cases += [
                config_case(f"int-{k}-2**64", k, 2**64),
                set_case(f"int-{k}-10**18", k, str(10**18)),
                set_case(f"int-{k}--1", k, "-1"),
                config_case(f"int-{k}-max+1", k, hi + 1),
                config_case(f"int-{k}-text", k, "abc"),
            ]
            if lo is not None and lo > 0:
                cases.append(set_case(f"int-{k}-min-1", k, str(lo - 1)))
        elif key.tp is float:
            cases += [set_case(f"float-{k}-text", k, "fast"), config_case(f"float-{k}-nan", k, float("nan"))]
            cases.append(set_case(f"float-{k}-inf", k, ".inf"))
            if lo is not None:
                cases.append(set_case(f"float-{k}-below-min", k, str(lo - 1.0)))
            if above is not None:
                cases.append(config_case(f"float-{k}-not-above", k, float(above)))
            if hi is not None:
                cases.append(config_case(f"float-{k}-above-max", k, hi + 0.5))
        elif key.tp is bool:
            cases += [set_case(f"bool-{k}-maybe", k, "maybe"), config_case(f"bool-{k}-2", k, 2)]
        elif key.tp is str:
            cases.append(config_case(f"str-{k}-int", k, 3))
            if key.meta.get("choices") is not None:
                cases.append(set_case(f"enum-{k}-unknown", k, "nosuch_name"))
        elif typing.get_origin(key.tp) is list:
            cases.append(config_case(f"list-{k}-mapping", k, {"a": 1}))
            if key.meta.get("choices") is not None:
                cases.append(set_case(f"enum-{k}-unknown", k, "[nosuch_name, palette]"))
        elif typing.get_origin(key.tp) is dict:
            cases.append(config_case(f"dict-{k}-list", k, [1, 2]))
    return cases


# -------------------------------------------------------------------------------------------------- config files
def _config(id: str, data: bytes | str, needles: tuple[str, ...] = ("c.yaml",)) -> Case:
    return Case(f"config-{id}", "train", (*TRAIN, "--config", "c.yaml"), needles, write("c.yaml", data))


def config_file_cases() -> list[Case]:
    deep_flow = "a: " + "[" * (MAX_YAML_DEPTH + 5) + "]" * (MAX_YAML_DEPTH + 5) + "\n"
    deep_block = "".join("  " * i + f"k{i}:\n" for i in range(MAX_YAML_DEPTH + 3)) + "  " * (MAX_YAML_DEPTH + 3) + "x\n"
    deep_map = "a: " + "{b: " * (MAX_YAML_DEPTH + 8) + "1" + "}" * (MAX_YAML_DEPTH + 8) + "\n"
    big = "# padding\n" * (MAX_YAML_BYTES // 10 + 10)
    cases = [
        _config("syntax-unclosed-bracket", "train: [1, 2\n"),
        _config("syntax-unclosed-brace", "train: {steps: 3\n"),
        _config("syntax-unclosed-quote", 'train:\n  device: "cpu\n'),
        _config("syntax-bad-indent", "train:\n  steps: 3\n   seed: 1\n"),
        _config("syntax-tab-indent", "train:\n\tsteps: 3\n"),
        _config("syntax-double-colon", "train: steps: 3\n"),
        _config("syntax-list-then-map", "- a\nb: c\n"),
        _config("syntax-undefined-alias", "train:\n  steps: *nowhere\n"),
        _config("syntax-stray-document-end", "train: {}\n...\n]\n"),
        _config("not-a-mapping-list", "- train\n- steps\n"),
        _config("not-a-mapping-scalar", "just text\n"),
        _config("two-documents", "train: {steps: 3}\n---\ntrain: {steps: 4}\n"),
        _config("latin1", "train:\n  device: caf\xe9\n".encode("latin-1")),
        _config("invalid-utf8-start", b"\xc3\x28: 1\n"),
        _config("utf16-le-bom", "train:\n  steps: 3\n".encode("utf-16")),
        _config("utf16-be-bom", b"\xfe\xff" + "train:\n  steps: 3\n".encode("utf-16-be")),
        _config("utf16-le-no-bom", "train:\n  steps: 3\n".encode("utf-16-le")),
        _config("utf32", "train:\n  steps: 3\n".encode("utf-32")),
        _config("bom-syntax-error", b"\xef\xbb\xbftrain: [1, 2\n"),
        _config("bom-unknown-key", b"\xef\xbb\xbftrain:\n  stepz: 3\n", ("c.yaml", "train.stepz")),
        _config("nul-byte", b"train:\n  steps: 3\x00\n"),
        _config("png", png()),
        _config("random-bytes", noise(4096)),
        _config("gzip", zlib.compress(b"train:\n  steps: 3\n" * 50)),
        _config("zip", zip_of({"c.yaml": b"train: {}\n"})),
        Case("config-checkpoint", "train", (*TRAIN, "--config", CKPT), ("last.pt",), copy_run()),
        _config("too-large", big),
        _config("too-large-one-line", "a: " + "x" * (MAX_YAML_BYTES + 10) + "\n"),
        _config("nesting-flow-lists", deep_flow),
        _config("nesting-block-mappings", deep_block),
        _config("nesting-flow-mappings", deep_map),
        _config("alias-bomb", alias_bomb()),
        _config("alias-bomb-wide", "a: &a [" + ", ".join(["x"] * 200) + "]\nb: [" + ", ".join(["*a"] * 100) + "]\n"),
        _config("alias-self-reference", "a: &a [*a]\n"),
        _config("alias-just-over-limit", f"a: &a [{', '.join(['x'] * 100)}]\nb: [{', '.join(['*a'] * 101)}]\n"),
        _config("duplicate-top-key", "train:\n  steps: 3\ntrain:\n  seed: 1\n", ("c.yaml", "train")),
        _config("duplicate-nested-key", "train:\n  steps: 3\n  steps: 4\n", ("c.yaml", "steps")),
        _config("duplicate-flow-key", "hooks: {scalars: {every: 1, every: 2}}\n", ("c.yaml", "every")),
        _config("unknown-section", "trian:\n  steps: 3\n", ("c.yaml", "trian")),
        _config("unknown-key", "train:\n  stpes: 3\n", ("c.yaml", "train.stpes")),
        _config(
            "unknown-deep-key",
            "model:\n  discriminator:\n    spectral_norm:\n      iters: 2\n",
            ("c.yaml", "model.discriminator.spectral_norm.iters"),
        ),
        _config("unknown-hook", "hooks:\n  fidd: {every: 1}\n", ("c.yaml", "hooks.fidd")),
        _config("non-string-key", "train:\n  3: 4\n", ("c.yaml", "train.3")),
        _config("python-object-apply", "train: !!python/object/apply:os.system ['echo pwned']\n"),
        _config("python-name", "train:\n  device: !!python/name:os.system\n"),
        _config("python-tuple", "train:\n  steps: !!python/tuple [1, 2]\n"),
        _config("python-object-new", "a: !!python/object/new:collections.OrderedDict [[[x, 1]]]\n"),
        _config("custom-tag", "train:\n  steps: !mytag 3\n"),
        _config("binary-tag", "train:\n  device: !!binary aGVsbG8=\n", ("c.yaml", "train.device")),
        _config("set-tag", "train:\n  steps: !!set {1, 2}\n", ("c.yaml", "train.steps")),
        _config("timestamp-for-int", "train:\n  steps: 2024-01-01\n", ("c.yaml", "train.steps")),
        _config("null-section", "train: null\nhooks: ~\n", ("c.yaml", "train")),
        _config("domains-one", "data:\n  synthetic:\n    domains: [palette]\n", ("c.yaml", "data.synthetic.domains")),
        _config(
            "domains-repeated",
            "data:\n  synthetic:\n    domains: [palette, palette]\n",
            ("c.yaml", "data.synthetic.domains"),
        ),
        _config("image-size-not-divisible", "data:\n  image_size: 18\n", ("c.yaml", "data.image_size")),
        _config(
            "exclusive-groups-overlap",
            "data:\n  celeba:\n    exclusive_groups: [[Male, Young], [Young]]\n",
            ("c.yaml", "data.celeba.exclusive_groups"),
        ),
        _config("hparams-unknown-key", "study:\n  hparams: [train.nosuch]\n", ("c.yaml", "study.hparams")),
        _config(
            "norm-options-unknown",
            "model:\n  generator:\n    norm_options: {nosuch: 1}\n",
            ("c.yaml", "model.generator.norm_options"),
        ),
        _config("lr-decay-beyond-steps", "train:\n  steps: 4\n  lr_decay_steps: 10\n", ("train.lr_decay_steps",)),
        Case("config-missing-file", "train", (*TRAIN, "--config", "nosuch.yaml"), ("nosuch.yaml",)),
        Case("config-folder", "train", (*TRAIN, "--config", "adir"), ("adir",), mkdir("adir")),
        Case("config-fifo", "train", (*TRAIN, "--config", "pipe.yaml"), ("pipe.yaml",), fifo("pipe.yaml"), timeout=2),
        Case(
            "config-device-cuda",
            "train",
            (*TRAIN, "--set", "train.device=cuda"),
            ("train.device",),
            needs=frozenset({"no-cuda"}),
        ),
        _config("inception-weights-missing", "metrics:\n  inception_weights: nosuch.pth\n", ("nosuch.pth",)),
    ]
    assert MAX_YAML_ALIAS_NODES < 101 * 101  # alias-just-over-limit expands to 10201 nodes
    return cases


# ------------------------------------------------------------------------------------------------------ --set
def set_override_cases() -> list[Case]:
    def case(id: str, text: str, needle: str) -> Case:
        return Case(f"set-{id}", "train", (*TRAIN, "--set", text), (needle,))

    return [
        case("no-equals", "train.steps", "train.steps"),
        case("no-section", "steps=3", "steps=3"),
        case("empty-key", "=3", "--set =3"),
        case("empty-part", "train..steps=3", "train..steps"),
        case("leading-dot", ".train.steps=3", ".train.steps"),
        case("trailing-dot", "train.steps.=3", "train.steps."),
        case("space-in-key", "train. steps=3", "train. steps"),
        case("unknown-section", "trian.steps=3", "trian.steps"),
        case("unknown-key", "train.stpes=3", "train.stpes"),
        case("key-below-a-value", "train.steps.x=3", "train.steps"),
        case("section-as-value", "hooks.scalars=3", "hooks.scalars"),
        case("whole-section", "train=3", "train=3"),
        case("empty-value-int", "train.steps=", "train.steps"),
        case("list-for-int", "train.steps=[1, 2]", "train.steps"),
        case("mapping-for-int", "train.steps={a: 1}", "train.steps"),
        case("string-for-list", "data.synthetic.domains=palette", "data.synthetic.domains"),
        case("string-for-mapping", "model.generator.norm_options=affine", "model.generator.norm_options"),
        case("duplicate-key-in-value", "model.generator.norm_options={affine: true, affine: false}", "affine"),
        case("alias-bomb-value", "study.labels=" + alias_bomb().replace("\n", ", ").join("{}"), "study.labels"),
        case("deep-value", "study.labels=" + "[" * 40 + "]" * 40, "study.labels"),
        case("python-tag-value", "train.steps=!!python/object/apply:os.system [echo]", "train.steps"),
        case("unicode-key", "train.stéps=3", "train.stéps"),
        case("nul-in-value", "train.device=cp\x00u", "train.device"),
    ]


# ------------------------------------------------------------------------------------------------------ sweeps
SWEEP_OK = (
    "name: s\nconfigs: [tiny.yaml]\nset:\n  train.steps: 1\n  train.lr_decay_steps: 0\n"
    "grid:\n  model.generator.conv_dim: [4]\n"
)


def sweep_cases() -> list[Case]:
    return [
        Case("sweep-missing-file", "train", ("--sweep", "nosuch.yaml", "--dry-run"), ("nosuch.yaml",)),
        Case("sweep-folder", "train", ("--sweep", "adir", "--dry-run"), ("adir",), mkdir("adir")),
        Case("sweep-fifo", "train", ("--sweep", "s.yaml", "--dry-run"), ("s.yaml",), fifo("s.yaml"), timeout=2),
        sweep("syntax-error", "grid: [1, 2\n"),
        sweep("syntax-error-no-dry-run", "grid: {train.seed: [0, 1]\n", dry=False),
        sweep("binary", png()),
        sweep("utf16", SWEEP_OK.encode("utf-16")),
        sweep("duplicate-key", SWEEP_OK + "name: t\n", ("s.yaml", "name")),
        sweep("alias-bomb", alias_bomb()),
        sweep("not-a-mapping", "- a\n- b\n"),
        sweep("unknown-top-key", SWEEP_OK + "gird: {}\n", ("s.yaml", "gird")),
        sweep("bad-name", SWEEP_OK.replace("name: s", "name: ../up"), ("s.yaml", "name")),
        sweep(
            "configs-not-list", SWEEP_OK.replace("configs: [tiny.yaml]", "configs: tiny.yaml"), ("s.yaml", "configs")
        ),
        sweep("configs-missing-file", SWEEP_OK.replace("tiny.yaml", "nosuch.yaml"), ("nosuch.yaml",)),
        sweep("set-not-mapping", "name: s\nset: [1]\ngrid: {train.seed: [0]}\n", ("s.yaml", "set")),
        sweep("grid-empty", "name: s\nconfigs: [tiny.yaml]\n", ("s.yaml", "grid")),
        sweep("grid-not-list", "name: s\nconfigs: [tiny.yaml]\ngrid: {train.seed: 3}\n", ("s.yaml", "train.seed")),
        sweep("grid-empty-list", "name: s\nconfigs: [tiny.yaml]\ngrid: {train.seed: []}\n", ("s.yaml", "train.seed")),
        sweep("grid-unknown-key", "name: s\nconfigs: [tiny.yaml]\ngrid: {train.sed: [0]}\n", ("s.yaml", "train.sed")),
        sweep("grid-bad-value", SWEEP_OK + "  train.n_critic: [0]\n", ("s.yaml", "train.n_critic")),
        sweep("grid-huge-value", SWEEP_OK + f"  train.batch_size: [{2**64}]\n", ("s.yaml", "train.batch_size")),
        sweep("grid-duplicate-cell", SWEEP_OK.replace("[4]", "[4, 4]"), ("s.yaml", "duplicate")),
        sweep("grid-seed", SWEEP_OK + "  train.seed: [0, 1]\n", ("s.yaml", "grid: train.seed", "seeds:")),
        sweep("set-seed", SWEEP_OK.replace("set:\n", "set:\n  train.seed: 3\n"), ("s.yaml", "set: train.seed")),
        sweep("set-unknown-key", SWEEP_OK.replace("train.steps: 1", "train.stepz: 1"), ("s.yaml", "train.stepz")),
        sweep("set-wrong-type", SWEEP_OK.replace("train.steps: 1", "train.steps: many"), ("s.yaml", "train.steps")),
        sweep("seeds-negative", SWEEP_OK + "seeds: [-1]\n", ("s.yaml", "seeds")),
        sweep("seeds-repeated", SWEEP_OK + "seeds: [1, 1]\n", ("s.yaml", "seeds")),
        sweep("seeds-not-list", SWEEP_OK + "seeds: 3\n", ("s.yaml", "seeds")),
        sweep("seeds-strings", SWEEP_OK + "seeds: [a]\n", ("s.yaml", "seeds")),
        sweep(
            "settings-bad-label",
            "name: s\nconfigs: [tiny.yaml]\nsettings:\n  a/b: {train.seed: 1}\n",
            ("s.yaml", "a/b"),
        ),
        sweep(
            "settings-not-mapping", "name: s\nconfigs: [tiny.yaml]\nsettings:\n  axis: [1, 2]\n", ("s.yaml", "settings")
        ),
        Case(
            "sweep-with-config",
            "train",
            ("--sweep", "s.yaml", "--config", "tiny.yaml", "--dry-run"),
            ("--sweep",),
            write("s.yaml", SWEEP_OK),
        ),
        Case(
            "sweep-with-resume",
            "train",
            ("--sweep", "s.yaml", "--resume", "auto", "--dry-run"),
            ("--sweep",),
            write("s.yaml", SWEEP_OK),
        ),
        Case(
            "sweep-workers-0",
            "train",
            ("--sweep", "s.yaml", "--workers", "0"),
            ("--workers",),
            write("s.yaml", SWEEP_OK),
        ),
        Case(
            "sweep-workers-negative",
            "train",
            ("--sweep", "s.yaml", "--workers", "-2"),
            ("--workers",),
            write("s.yaml", SWEEP_OK),
        ),
        Case(
            "sweep-bad-set",
            "train",
            ("--sweep", "s.yaml", "--dry-run", "--set", "train.steps=x"),
            ("train.steps",),
            write("s.yaml", SWEEP_OK),
        ),
    ]


def sweep(id: str, text: str | bytes, needles: tuple[str, ...] = ("s.yaml",), dry: bool = True) -> Case:
    argv = ("--sweep", "s.yaml", *(("--dry-run",) if dry else ()))
    return Case(f"sweep-{id}", "train", argv, needles, write("s.yaml", text))


# ----------------------------------------------------------------------------------------- image folders, images
def dataset(extra: dict[str, bytes | str | None] | None = None, empty: tuple[str, ...] = ()) -> Files:
    """``ds/a`` and ``ds/b`` with four good 16 px PNGs each (none in the ``empty`` domains), plus ``extra`` files
    (relative to ``ds``; None: a FIFO)."""

    def files(tmp: Path, art: Artefacts) -> None:
        for d, domain in enumerate(("a", "b")):
            (tmp / "ds" / domain).mkdir(parents=True)
            for i in range(0 if domain in empty else 4):
                (tmp / "ds" / domain / f"{i}.png").write_bytes(png(seed=10 * d + i))
        for name, data in (extra or {}).items():
            path = tmp / "ds" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                os.mkfifo(path)
            else:
                path.write_bytes(data.encode() if isinstance(data, str) else data)

    return files


FOLDER = (*TRAIN, "--set", "data.source=folder", "--set", "data.folder.root=ds", "--set", "hooks.fid.every=0")
CELEBA = (
    *TRAIN,
    "--set",
    "data.source=celeba",
    "--set",
    "data.celeba.image_dir=imgs",
    "--set",
    "data.celeba.attr_file=attr.txt",
    "--set",
    "data.celeba.test_count=1",
    "--set",
    "hooks.fid.every=0",
)
TRANSLATE = ("translate", "--checkpoint", CKPT, "--to", "outline", "--device", "cpu")


def truncated_png() -> bytes:
    data = png(size=64, seed=3)
    return data[: len(data) // 2]


def float_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32)).save(buffer, format="TIFF")
    return buffer.getvalue()


# kind -> (suffix, contents); every kind is read when translated, the first four also inside a training's domain
BAD_IMAGES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "corrupt": (".png", lambda: noise(3000)),
    "truncated": (".png", truncated_png),
    "bomb": (".png", bomb_png),
    "text": (".png", lambda: b"this is not an image\n"),
    "empty": (".jpg", lambda: b""),
    "float32": (".tif", float_tiff),
}


def celeba_files(attr: bytes | str, images: tuple[str, ...] = ("1.png", "2.png", "3.png")) -> Files:
    def files(tmp: Path, art: Artefacts) -> None:
        (tmp / "imgs").mkdir()
        for i, name in enumerate(images):
            (tmp / "imgs" / name).write_bytes(png(seed=i))
        (tmp / "attr.txt").write_bytes(attr.encode() if isinstance(attr, str) else attr)

    return files


ATTR_OK = "3\nBlack_Hair Blond_Hair Brown_Hair Gray_Hair Male Young\n" + "".join(
    f"{i}.png 1 -1 -1 -1 {s} 1\n" for i, s in ((1, 1), (2, -1), (3, 1))
)


def image_cases() -> list[Case]:
    cases = [
        Case("data-root-empty", "train", (*TRAIN, "--set", "data.source=folder"), ("data.folder.root",)),
        Case("data-root-missing", "train", (*FOLDER[:-2], "--set", "data.folder.root=nosuch"), ("nosuch",)),
        Case(
            "data-root-is-file", "train", (*FOLDER, "--set", "data.folder.root=f.txt"), ("f.txt",), write("f.txt", "x")
        ),
        Case("data-root-empty-folder", "train", FOLDER, ("ds",), mkdir("ds")),
        Case("data-domain-missing", "train", (*FOLDER, "--set", "data.folder.domains=[a, zz]"), ("zz",), dataset()),
        Case("data-domain-no-images", "train", FOLDER, ("ds/b",), dataset({"b/notes.txt": "x"}, empty=("b",))),
        Case("data-domain-only-fifo", "train", FOLDER, ("ds/b",), dataset({"b/x.png": None}, empty=("b",))),
        Case("data-domain-hidden-only", "train", FOLDER, ("ds/b",), dataset({"b/.git/0.png": png()}, empty=("b",))),
        Case(
            "data-split-folders-missing",
            "train",
            (*FOLDER, "--set", "data.folder.split=folders"),
            ("ds/train",),
            dataset(),
        ),
        Case(
            "data-celeba-attr-missing",
            "train",
            (*CELEBA[:-6], "--set", "data.celeba.attr_file=nosuch.txt", "--set", "hooks.fid.every=0"),
            ("nosuch.txt",),
            mkdir("imgs"),
        ),
        Case(
            "data-celeba-image-dir-missing",
            "train",
            (*CELEBA, "--set", "data.celeba.image_dir=noimgs"),
            ("noimgs",),
            celeba_files(ATTR_OK),
        ),
        Case("data-celeba-attr-binary", "train", CELEBA, ("attr.txt",), celeba_files(png())),
        Case("data-celeba-attr-utf16", "train", CELEBA, ("attr.txt",), celeba_files(ATTR_OK.encode("utf-16"))),
        Case("data-celeba-attr-header", "train", CELEBA, ("attr.txt",), celeba_files("hello\n")),
        Case(
            "data-celeba-attr-unknown-attribute",
            "train",
            CELEBA,
            ("attr.txt", "Blond_Hair"),
            celeba_files(ATTR_OK.replace("Blond_Hair", "Blonde")),
        ),
        Case("data-celeba-attr-no-rows", "train", CELEBA, ("attr.txt",), celeba_files(ATTR_OK.split("1.png")[0])),
        Case(
            "data-celeba-attr-bad-value",
            "train",
            CELEBA,
            ("attr.txt",),
            celeba_files(ATTR_OK.replace("2.png 1", "2.png yes")),
        ),
        Case(
            "data-celeba-attr-short-row",
            "train",
            CELEBA,
            ("attr.txt",),
            celeba_files(ATTR_OK.replace("3.png 1 -1 -1 -1 1 1", "3.png 1 -1")),
        ),
        Case("data-celeba-image-missing", "train", CELEBA, ("3.png",), celeba_files(ATTR_OK, ("1.png", "2.png"))),
    ]
    for n, (kind, (suffix, make)) in enumerate(BAD_IMAGES.items()):
        # Two bad files: a 1-in-6 test split cannot take both, so training reads one.
        bad = {f"b/bad1{suffix}": make(), f"b/bad2{suffix}": make()}
        name = f"in{suffix}"
        translate = (*TRANSLATE, "--input", name)
        cases.append(
            Case(
                f"image-{kind}-translate",
                "evaluate",
                (*translate, "--out", "out"),
                (name,),
                both(copy_run(), write(name, make())),
            )
        )
        if n >= 4:
            continue  # the cases below cost a second or more each, while the code fails them
        cases.append(Case(f"image-{kind}-in-domain", "train", FOLDER, ("bad",), dataset(bad)))
        if kind in ("truncated", "bomb"):  # the header (bomb) and the pixels (truncated) before anything is written
            cases.append(
                Case(
                    f"image-{kind}-translate-size-input",
                    "evaluate",
                    (*translate, "--out", "o.png", "--size", "input"),
                    (name,),
                    both(copy_run(), write(name, make())),
                )
            )
        if kind in ("corrupt", "bomb"):
            cases.append(
                Case(
                    f"image-{kind}-only-skip-bad",
                    "train",
                    (*FOLDER, "--set", "data.skip_bad_images=true"),
                    ("ds/b",),
                    dataset(bad, empty=("b",)),
                )
            )
        if kind == "corrupt":
            cases.append(
                Case(
                    f"image-{kind}-translate-folder",
                    "evaluate",
                    (*TRANSLATE, "--input", "ins", "--out", "out"),
                    ("bad.png",),
                    both(copy_run(), write("ins/0.png", png()), write("ins/bad.png", make())),
                )
            )
    fid_imgs = both(write("imgs/0.png", png(seed=1)), write("imgs/1.png", png(seed=2)))
    cases += [
        Case(
            "image-fifo-translate",
            "evaluate",
            (*TRANSLATE, "--input", "x.png", "--out", "out"),
            ("x.png",),
            both(copy_run(), fifo("x.png")),
        ),
        Case(
            "image-missing-translate",
            "evaluate",
            (*TRANSLATE, "--input", "nosuch.png", "--out", "out"),
            ("nosuch.png",),
            copy_run(),
        ),
        Case(
            "image-empty-folder-translate",
            "evaluate",
            (*TRANSLATE, "--input", "empty", "--out", "out"),
            ("empty",),
            both(copy_run(), mkdir("empty")),
        ),
        Case("image-fid-missing-folder", "evaluate", ("fid", "nosuch", "imgs"), ("nosuch",), fid_imgs),
        Case(
            "image-fid-empty-folder", "evaluate", ("fid", "empty", "imgs"), ("empty",), both(fid_imgs, mkdir("empty"))
        ),
        Case(
            "image-fid-one-image",
            "evaluate",
            ("fid", "one", "imgs"),
            ("one",),
            both(fid_imgs, write("one/0.png", png())),
        ),
        Case(
            "image-fid-fifo-only",
            "evaluate",
            ("fid", "imgs", "pipes"),
            ("pipes",),
            both(fid_imgs, fifo("pipes/a.png"), fifo("pipes/b.png")),
        ),
        Case(
            "image-kid-one-image",
            "evaluate",
            ("kid", "one", "imgs"),
            ("one",),
            both(fid_imgs, write("one/0.png", png())),
        ),
        Case(
            "image-save-stats-empty-folder",
            "evaluate",
            ("fid", "--save-stats", "empty", "s.npz"),
            ("empty",),
            mkdir("empty"),
        ),
    ]
    return cases


# ------------------------------------------------------------------------------------------------- checkpoints
def state_change(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes, Artefacts], bytes]:
    def change(data: bytes, art: Artefacts) -> bytes:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        edit(state)
        return saved(state)

    return change


def _first(state_dict: dict[str, Any]) -> str:
    return next(k for k, v in state_dict.items() if v.ndim >= 2)


def _misshape(s: dict[str, Any]) -> None:
    key = _first(s["G"])
    s["G"][key] = torch.zeros(s["G"][key].shape[0] + 1, *s["G"][key].shape[1:])


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = state
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.pop(key)


class _Foreign:
    """A class torch.load(weights_only=True) must refuse to unpickle."""


# name -> (change of the real last.pt's bytes, extra needles, whether the generator's tensors are still fine)
CORRUPTIONS: dict[str, tuple[Callable[[bytes, Artefacts], bytes | None] | str, tuple[str, ...], bool]] = {
    "random-bytes": (lambda d, a: noise(5000), (), True),
    "empty": (lambda d, a: b"", (), True),
    "truncated-half": (lambda d, a: d[: len(d) // 2], (), True),
    "truncated-tail": (lambda d, a: d[:-200], (), True),
    "flipped-tensor-byte": (lambda d, a: flip_tensor_byte(d), (), True),
    "zip-not-torch": (lambda d, a: zip_of({"archive/data.pkl": b"hello"}), (), True),
    "pickled-object": (lambda d, a: saved({"format": "spectral-gan/1", "x": _Foreign()}), (), True),
    "tensor-not-dict": (lambda d, a: saved(torch.zeros(3)), (), True),
    "no-format": (state_change(_drop("format")), (), True),
    "missing-G": (state_change(_drop("G")), ("G",), False),
    "missing-opt_D": (state_change(_drop("opt_D")), ("opt_D",), True),
    "step-text": (state_change(_set("step", "abc")), ("step",), True),
    "step-negative": (state_change(_set("step", -1)), ("step",), True),
    "config-list": (state_change(_set("config", [1, 2])), ("config",), True),
    "domains-empty": (state_change(_set("domains", [])), ("domains",), True),
    "G-not-tensors": (state_change(lambda s: s["G"].update(w=3)), ("G",), False),
    "G-misshaped": (state_change(_misshape), ("G",), False),
    "G-missing-tensor": (state_change(lambda s: s["G"].pop(_first(s["G"]))), ("G",), False),
    "G-extra-tensor": (state_change(lambda s: s["G"].update(extra=torch.zeros(2))), ("G",), False),
    "config-invalid-value": (state_change(_set("config.train.steps", -1)), ("train.steps",), True),
    "config-unknown-key": (state_change(_set("config.train.nosuch", 1)), ("train.nosuch",), True),
    "config-section-scalar": (state_change(_set("config.hooks", 3)), ("hooks",), True),
    "missing": (lambda d, a: None, (), True),
    "folder": ("folder", (), True),
}
CHECKPOINT_COMMANDS = {
    "paired-l1": ("paired-l1", "--checkpoint", "c.pt", "--num-images", "2", "--device", "cpu"),
    "translate": ("translate", "--checkpoint", "c.pt", "--input", "in.png", "--to", "outline", "--out", "o.png"),
    "accuracy": ("accuracy", "--checkpoint", "c.pt", "--num-images", "2", "--device", "cpu"),
    "fid": ("fid", "--checkpoint", "c.pt", "--num-images", "2", "--device", "cpu"),
    "train-classifier": ("train-classifier", "--checkpoint", "c.pt", "--steps", "1", "--device", "cpu"),
}


SAMPLE = {
    "*": (
        "random-bytes",
        "truncated-half",
        "flipped-tensor-byte",
        "no-format",
        "missing-G",
        "step-negative",
        "domains-empty",
        "G-misshaped",
        "config-invalid-value",
        "missing",
        "folder",
    ),
    "fid": ("truncated-half", "flipped-tensor-byte", "G-misshaped", "missing"),
    "train-classifier": ("truncated-half", "flipped-tensor-byte", "step-negative", "config-invalid-value", "missing"),
}


def corrupt_checkpoint(name: str, at: str) -> Files:
    change = CORRUPTIONS[name][0]
    if change == "folder":
        return mkdir(at)
    return checkpoint_as(at, change)


def checkpoint_cases() -> list[Case]:
    cases = []
    for name, (_, needles, g_fine) in CORRUPTIONS.items():
        # train.py --resume: the run's own last.pt (the step files beside it are fine)
        resume = both(copy_run(), lambda tmp, art: _remove(tmp / CKPT), corrupt_checkpoint(name, CKPT))
        cases.append(Case(f"ckpt-{name}-resume", "train", ("--resume", CKPT), ("last.pt", *needles), resume))
        for command, argv in CHECKPOINT_COMMANDS.items():
            if command == "train-classifier" and not g_fine:
                continue  # it reads the config and data only: a damaged generator is no error there
            if command != "paired-l1" and name not in SAMPLE.get(command, SAMPLE["*"]):
                continue  # the commands load checkpoints alike: paired-l1 takes every kind, the others a sample
            files = both(write("in.png", png()), corrupt_checkpoint(name, "c.pt"))
            cases.append(Case(f"ckpt-{name}-{command}", "evaluate", argv, ("c.pt", *needles), files))
    cases.append(Case("ckpt-fifo-paired-l1", "evaluate", CHECKPOINT_COMMANDS["paired-l1"], ("c.pt",), fifo("c.pt")))
    cases.append(
        Case(
            "ckpt-resume-auto-corrupt-last",
            "train",
            ("--resume", "auto", "--run-dir", "r2"),
            ("last.pt",),
            checkpoint_as("r2/checkpoints/last.pt", lambda d, a: d[: len(d) // 3]),
        )
    )
    cases.append(
        Case(
            "ckpt-resume-folder-corrupt-last",
            "train",
            ("--resume", "r2"),
            ("last.pt",),
            checkpoint_as("r2/checkpoints/last.pt", lambda d, a: noise(999)),
        )
    )
    return cases


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- classifiers
def classifier_change(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Artefacts], None]:
    def files(tmp: Path, art: Artefacts) -> None:
        payload = art.classifier_payload()
        edit(payload)
        (tmp / "clf.pt").write_bytes(saved(payload))

    return files


def _resized(payload: dict[str, Any], image_size: int = 32, multi_label: bool = False) -> None:
    from gan.metrics.classifier import DomainClassifier

    args = {**payload["args"], "image_size": image_size, "multi_label": multi_label}
    payload["args"] = args
    payload["state_dict"] = DomainClassifier(**args).state_dict()


def classifier_cases() -> list[Case]:
    def raw(change: Callable[[bytes], bytes]) -> Files:
        return lambda tmp, art: (tmp / "clf.pt").write_bytes(change(art.classifier.read_bytes()))

    def misshape(p: dict[str, Any]) -> None:
        key = _first(p["state_dict"])
        p["state_dict"][key] = torch.zeros(1, *p["state_dict"][key].shape[1:])

    variants: dict[str, tuple[Files | None, tuple[str, ...]]] = {
        "random-bytes": (raw(lambda d: noise(3000)), ()),
        "empty": (raw(lambda d: b""), ()),
        "truncated": (raw(lambda d: d[: len(d) // 2]), ()),
        "flipped-tensor-byte": (raw(flip_tensor_byte), ()),
        "missing": (None, ()),
        "folder": (mkdir("clf.pt"), ()),
        "fifo": (fifo("clf.pt"), ()),
        "a-checkpoint": (lambda tmp, art: shutil.copy(art.checkpoint, tmp / "clf.pt"), ()),
        "no-format": (classifier_change(_drop("format")), ()),
        "missing-state_dict": (classifier_change(_drop("state_dict")), ("state_dict",)),
        "args-invalid": (classifier_change(_set("args.image_size", 2)), ()),
        "args-unknown": (classifier_change(_set("args.nosuch", 1)), ()),
        "args-not-mapping": (classifier_change(_set("args", [1, 2])), ("arguments",)),
        "state_dict-list": (classifier_change(_set("state_dict", [1])), ("state_dict",)),
        "state_dict-misshaped": (classifier_change(misshape), ()),
        "domains-count": (classifier_change(_set("domains", ["a", "b", "c", "d"])), ("domain",)),
        "domains-other": (classifier_change(_set("domains", ["x", "y", "z"])), ("domains",)),
        "domains-not-list": (classifier_change(_set("domains", 3)), ("domains",)),
        "image-size-other": (classifier_change(_resized), ("32",)),
        "multi-label": (classifier_change(lambda p: _resized(p, 16, True)), ("label",)),
    }
    cases = []
    argv = ("accuracy", "--checkpoint", CKPT, "--classifier", "clf.pt", "--num-images", "2", "--device", "cpu")
    for name, (files, needles) in variants.items():
        cases.append(Case(f"classifier-{name}", "evaluate", argv, ("clf.pt", *needles), both(copy_run(), files)))
    fid = ("fid", "--checkpoint", CKPT, "--classifier", "clf.pt", "--extractor", "classifier", "--num-images", "2")
    for name in ("truncated", "image-size-other"):
        files, needles = variants[name]
        cases.append(
            Case(
                f"classifier-{name}-fid",
                "evaluate",
                (*fid, "--device", "cpu"),
                ("clf.pt", *needles),
                both(copy_run(), files),
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------- FID statistics
def npz_cases() -> list[Case]:
    def weights(tmp: Path, art: Artefacts) -> None:
        os.symlink(art.inception, tmp / "w.pth")

    imgs = both(write("imgs/0.png", png(seed=1)), write("imgs/1.png", png(seed=2)))
    argv = ("fid", "bad.npz", "imgs", "--inception-weights", "w.pth", "--device", "cpu")
    d = 8
    # Each of these loads the Inception network first (seconds): the malformed kinds that differ most.
    variants: dict[str, tuple[bytes | None, tuple[str, ...]]] = {
        "not-a-zip": (noise(2000), ("not a zip archive",)),
        "missing-mu": (npz(sigma=np.eye(d)), ("mu",)),
        "sigma-wrong-shape": (npz(mu=np.zeros(d), sigma=np.eye(d + 1)), ("sigma",)),
        "dims-mismatch": (npz(mu=np.zeros(d), sigma=np.eye(d)), ("8-d",)),
        "missing": (None, ()),
    }
    cases = []
    for name, (data, needles) in variants.items():
        files = both(weights, imgs, write("bad.npz", data) if data is not None else None)
        cases.append(
            Case(f"npz-{name}", "evaluate", argv, ("bad.npz", *needles), files, needs=frozenset({"inception"}))
        )
    fifo_npz = both(weights, imgs, fifo("bad.npz"))
    cases.append(Case("npz-fifo", "evaluate", argv, ("bad.npz",), fifo_npz, needs=frozenset({"inception"}), timeout=2))
    cases += [
        Case(
            "npz-save-stats-exists",
            "evaluate",
            ("fid", "--save-stats", "imgs", "s.npz"),
            ("s.npz",),
            both(imgs, write("s.npz", npz(mu=np.zeros(2), sigma=np.eye(2)))),
        ),
        Case("npz-save-stats-not-npz", "evaluate", ("fid", "--save-stats", "imgs", "s.txt"), ("s.txt",), imgs),
        Case(
            "npz-kid",
            "evaluate",
            ("kid", "a.npz", "b.npz"),
            ("kid",),
            both(write("a.npz", npz(mu=np.zeros(2))), write("b.npz", npz(mu=np.zeros(2)))),
        ),
        Case(
            "npz-no-inception-weights",  # a valid pair of inputs: the missing weights are what is refused
            "evaluate",
            ("fid", "imgs", "imgs", "--device", "cpu"),
            ("Inception",),
            imgs,
        ),
        Case(
            "npz-inception-weights-missing",
            "evaluate",
            ("fid", "imgs", "imgs", "--inception-weights", "nosuch.pth", "--device", "cpu"),
            ("nosuch.pth",),
            imgs,
        ),
        Case(
            "npz-inception-weights-garbage",
            "evaluate",
            ("fid", "imgs", "imgs", "--inception-weights", "g.pth", "--device", "cpu"),
            ("g.pth",),
            both(imgs, write("g.pth", noise(1000))),
        ),
    ]
    return cases


# ------------------------------------------------------------------------------------------------- run folders
def _chmod(name: str, mode: int) -> Files:
    def files(tmp: Path, art: Artefacts) -> None:
        (tmp / name).mkdir()
        (tmp / name).chmod(mode)

    return files


def run_folder_cases() -> list[Case]:
    tiny = ("--config", "tiny.yaml")

    def two_runs(tmp: Path, art: Artefacts) -> None:
        for name in ("a", "b"):
            (tmp / "runs" / name / "checkpoints").mkdir(parents=True)
            shutil.copy(art.checkpoint, tmp / "runs" / name / "checkpoints" / "last.pt")

    def other_run(tmp: Path, art: Artefacts) -> None:
        shutil.copytree(art.run / "checkpoints", tmp / "other" / "checkpoints")

    def stray(tmp: Path, art: Artefacts) -> None:
        (tmp / "copy").mkdir()
        shutil.copy(art.checkpoint, tmp / "copy" / "last.pt")

    translate = ("translate", "--checkpoint", CKPT, "--input", "in.png", "--to", "outline")
    return [
        Case("rundir-is-a-file", "train", (*tiny, "--run-dir", "f.txt"), ("f.txt",), write("f.txt", "x")),
        Case("rundir-under-a-file", "train", (*tiny, "--run-dir", "f.txt/run"), ("f.txt",), write("f.txt", "x")),
        Case(
            "rundir-unwritable",
            "train",
            (*tiny, "--run-dir", "ro/run"),
            ("ro",),
            _chmod("ro", 0o555),
            needs=frozenset({"not-root"}),
        ),
        Case("rundir-holds-checkpoints", "train", TRAIN, ("run",), copy_run()),
        Case("rundir-resume-auto-several-runs", "train", ("--resume", "auto"), ("--resume auto",), two_runs),
        Case("rundir-resume-missing-file", "train", ("--resume", "nosuch.pt"), ("nosuch.pt",)),
        Case("rundir-resume-empty-folder", "train", ("--resume", "empty"), ("empty",), mkdir("empty")),
        Case("rundir-resume-stray-copy", "train", ("--resume", "copy/last.pt"), ("copy/last.pt",), stray),
        Case(
            "rundir-resume-older-step",
            "train",
            ("--resume", "run/checkpoints/step_00000001.pt", "--run-dir", "run"),
            ("step_00000001.pt",),
            copy_run(),
        ),
        Case(
            "rundir-resume-changed-model",
            "train",
            ("--resume", CKPT, *tiny, "--set", "model.generator.conv_dim=8"),
            ("model.generator.conv_dim",),
            copy_run(),
        ),
        Case(
            "rundir-resume-changed-domains",
            "train",
            ("--resume", CKPT, *tiny, "--set", "data.synthetic.domains=[palette, outline, night]"),
            ("last.pt",),
            copy_run(),
        ),
        Case(
            "rundir-resume-into-another-run",
            "train",
            ("--resume", "other/checkpoints/last.pt", "--run-dir", "run"),
            ("run",),
            both(copy_run(), other_run),
        ),
        Case(
            "rundir-translate-out-under-a-file",
            "evaluate",
            (*translate, "--out", "f.txt/o.png"),
            ("f.txt",),
            both(copy_run(), write("in.png", png()), write("f.txt", "x")),
        ),
        Case(
            "rundir-translate-out-is-a-file",
            "evaluate",
            (*translate, "--out", "f.txt"),
            ("f.txt",),
            both(copy_run(), write("in.png", png()), write("f.txt", "x")),
        ),
        Case(
            "rundir-translate-out-exists",
            "evaluate",
            (*translate, "--out", "o.png"),
            ("o.png",),
            both(copy_run(), write("in.png", png()), write("o.png", png())),
        ),
        Case(
            "rundir-translate-out-unwritable",
            "evaluate",
            (*translate, "--out", "ro/o.png"),
            ("ro",),
            both(copy_run(), write("in.png", png()), _chmod("ro", 0o555)),
            needs=frozenset({"not-root"}),
        ),
        Case(
            "rundir-classifier-out-under-a-file",
            "evaluate",
            ("train-classifier", "--checkpoint", CKPT, "--steps", "1", "--out", "f.txt/c.pt", "--device", "cpu"),
            ("f.txt",),
            both(copy_run(), write("f.txt", "x")),
        ),
        Case("rundir-compare-missing", "evaluate", ("compare", "nosuch"), ("nosuch",)),
        Case("rundir-compare-empty-folder", "evaluate", ("compare", "empty"), ("empty",), mkdir("empty")),
        Case(
            "rundir-compare-binary-config",
            "evaluate",
            ("compare", "r"),
            ("config.yaml",),
            both(write("r/config.yaml", png()), write("r/scalars.jsonl", '{"step": 1, "loss/D/adv": 1.0}\n')),
        ),
        Case(
            "rundir-compare-yaml-error",
            "evaluate",
            ("compare", "r"),
            ("config.yaml",),
            both(write("r/config.yaml", "train: [1, 2\n"), write("r/scalars.jsonl", '{"step": 1}\n')),
        ),
    ]


# --------------------------------------------------------------------------------------- command-line arguments
def argument_cases() -> list[Case]:
    def train(id: str, argv: tuple[str, ...], needle: str, files: Files | None = None) -> Case:
        return Case(f"args-train-{id}", "train", argv, (needle,), files)  # train.py's usage errors: one line too

    def ev(id: str, argv: tuple[str, ...], needle: str, files: Files | None = None) -> Case:
        return Case(f"args-evaluate-{id}", "evaluate", argv, (needle,), files)

    run = copy_run()
    image = both(copy_run(), write("in.png", png()))
    translate = ("translate", "--checkpoint", CKPT, "--input", "in.png", "--out", "out", "--device", "cpu")
    imgs = both(write("imgs/0.png", png(seed=1)), write("imgs/1.png", png(seed=2)))
    sweep_ok = write("s.yaml", SWEEP_OK)
    return [
        train("unknown-option", (*TRAIN, "--nope"), "--nope"),
        train("unknown-short-option", (*TRAIN, "-x"), "-x"),
        train("stray-positional", (*TRAIN, "extra"), "extra"),
        train("config-no-value", ("--config",), "--config"),
        train("set-no-value", (*TRAIN, "--set"), "--set"),
        train("run-dir-no-value", ("--config", "tiny.yaml", "--run-dir"), "--run-dir"),
        train("resume-no-value", (*TRAIN, "--resume"), "--resume"),
        train("sweep-no-value", ("--sweep",), "--sweep"),
        train("workers-text", ("--sweep", "s.yaml", "--workers", "two"), "--workers", sweep_ok),
        train("workers-no-value", ("--sweep", "s.yaml", "--workers"), "--workers", sweep_ok),
        train("ambiguous-option", (*TRAIN, "--s", "x"), "--s"),
        train("dry-run-without-sweep", (*TRAIN, "--dry-run"), "--dry-run"),
        train("print-commands-without-sweep", (*TRAIN, "--print-commands"), "--print-commands"),
        train("workers-without-sweep", (*TRAIN, "--workers", "2"), "--workers"),
        ev("no-command", (), "COMMAND"),
        ev("unknown-command", ("nope",), "nope"),
        ev("unknown-option", ("paired-l1", "--checkpoint", CKPT, "--nope"), "--nope", run),
        ev(
            "translate-missing-to",
            ("translate", "--checkpoint", CKPT, "--input", "in.png", "--out", "o"),
            "--to",
            image,
        ),
        ev(
            "translate-missing-checkpoint",
            ("translate", "--input", "in.png", "--to", "a", "--out", "o"),
            "--checkpoint",
            image,
        ),
        ev("translate-size-3", (*translate, "--to", "outline", "--size", "3"), "--size", files=image),
        ev("translate-size-0", (*translate, "--to", "outline", "--size", "0"), "--size", files=image),
        ev("translate-size-negative", (*translate, "--to", "outline", "--size=-8"), "--size", files=image),
        ev("translate-size-text", (*translate, "--to", "outline", "--size", "big"), "--size", files=image),
        ev("translate-size-too-large", (*translate, "--to", "outline", "--size", "4096"), "--size", files=image),
        ev("translate-size-odd", (*translate, "--to", "outline", "--size", "30"), "--size", files=image),
        ev(
            "translate-size-unicode-digits",
            (*translate, "--to", "outline", "--size", "\u0661\u0666"),
            "--size",
            files=image,
        ),
        ev("translate-to-unknown", (*translate, "--to", "nosuchdomain"), "nosuchdomain", files=image),
        ev("translate-to-empty", (*translate, "--to", ""), "--to", files=image),
        ev("translate-to-twice", (*translate, "--to", "outline", "--to", "outline"), "outline", files=image),
        ev(
            "translate-labels-single-label",
            (*translate, "--to", "outline", "--labels", "Male"),
            "--labels",
            files=image,
        ),
        ev(
            "translate-out-image-two-targets",
            (*translate[:-4], "--out", "two.png", "--to", "outline", "--to", "texture"),
            "two.png",
            files=image,
        ),
        ev("translate-device-tpu", (*translate, "--to", "outline", "--device", "tpu"), "--device", image),
        Case(
            "args-evaluate-translate-device-cuda",
            "evaluate",
            (*translate[:-2], "--to", "outline", "--device", "cuda"),
            ("--device",),
            image,
            needs=frozenset({"no-cuda"}),
        ),
        ev(
            "paired-l1-num-images-0",
            ("paired-l1", "--checkpoint", CKPT, "--num-images", "0"),
            "--num-images",
            files=run,
        ),
        ev(
            "paired-l1-num-images-negative",
            ("paired-l1", "--checkpoint", CKPT, "--num-images", "-3"),
            "--num-images",
            files=run,
        ),
        ev(
            "paired-l1-num-images-text",
            ("paired-l1", "--checkpoint", CKPT, "--num-images", "many"),
            "--num-images",
            run,
        ),
        ev("fid-num-images-1", ("fid", "--checkpoint", CKPT, "--num-images", "1"), "--num-images", files=run),
        ev("kid-num-images-0", ("kid", "--checkpoint", CKPT, "--num-images", "0"), "--num-images", files=run),
        ev("accuracy-num-images-0", ("accuracy", "--checkpoint", CKPT, "--num-images", "0"), "--num-images", files=run),
        ev("accuracy-missing-checkpoint", ("accuracy",), "--checkpoint"),
        ev("fid-one-path", ("fid", "imgs"), "fid", files=imgs),
        ev("fid-three-paths", ("fid", "imgs", "imgs", "imgs"), "fid", files=imgs),
        ev("fid-paths-and-checkpoint", ("fid", "imgs", "--checkpoint", CKPT), "fid", files=both(imgs, run)),
        ev("fid-batch-size-0", ("fid", "imgs", "imgs", "--batch-size", "0"), "--batch-size", files=imgs),
        ev("fid-protocol-unknown", ("fid", "imgs", "imgs", "--protocol", "tf2"), "--protocol", imgs),
        ev("fid-extractor-unknown", ("fid", "--checkpoint", CKPT, "--extractor", "vgg"), "--extractor", run),
        ev("kid-subsets-0", ("kid", "imgs", "imgs", "--subsets", "0"), "--subsets", files=imgs),
        ev("kid-subset-size-1", ("kid", "imgs", "imgs", "--subset-size", "1"), "--subset-size", files=imgs),
        ev("kid-subsets-text", ("kid", "imgs", "imgs", "--subsets", "x"), "--subsets", imgs),
        ev(
            "train-classifier-steps-0", ("train-classifier", "--checkpoint", CKPT, "--steps", "0"), "--steps", files=run
        ),
        ev(
            "train-classifier-steps-negative",
            ("train-classifier", "--checkpoint", CKPT, "--steps", "-5"),
            "--steps",
            files=run,
        ),
        ev(
            "compare-tolerance-negative", ("compare", "empty", "--tolerance", "-1"), "--tolerance", files=mkdir("empty")
        ),
        ev("compare-mode-unknown", ("compare", "empty", "--mode", "median"), "--mode", mkdir("empty")),
        ev("compare-no-paths", ("compare",), "PATH"),
    ]


def all_cases() -> list[Case]:
    cases = [
        *config_file_cases(),
        *schema_cases(),
        *set_override_cases(),
        *sweep_cases(),
        *image_cases(),
        *checkpoint_cases(),
        *classifier_cases(),
        *npz_cases(),
        *run_folder_cases(),
        *argument_cases(),
    ]
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    return cases
