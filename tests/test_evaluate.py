"""evaluate.py: translate a user's images with a trained checkpoint, and paired L1; errors are one line, exit 2."""

import json

import pytest
from PIL import Image

from gan.cli import evaluate_main, train_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("eval")
    (root / "tiny.yaml").write_text(TINY)
    assert (
        train_main(["--config", str(root / "tiny.yaml"), "--run-dir", str(root / "run"), "--set", "train.steps=2"]) == 0
    )
    return root / "run" / "checkpoints" / "last.pt"


def test_translate_one_image(checkpoint, tmp_path):
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "photo.jpg")
    out = tmp_path / "out.png"
    assert evaluate_main(["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "photo.jpg"),
                          "--to", "texture", "--out", str(out)]) == 0  # fmt: skip
    assert Image.open(out).size == (16, 16)


def test_translate_folder_into_several_domains(checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (i * 100, 0, 0)).save(tmp_path / "in" / f"p{i}.png")
    assert evaluate_main(["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"),
                          "--to", "outline", "--to", "texture", "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "p0_to_outline.png", "p0_to_texture.png", "p1_to_outline.png", "p1_to_texture.png",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--to", "sunset"], "--to sunset: unknown domain 'sunset'; known: palette, outline, texture"),
        (["--to", "palette,outline"], "exclusive; name exactly one"),
    ],
)
def test_translate_errors(checkpoint, tmp_path, capsys, args, needle):
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    code = evaluate_main(["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "x.png"),
                          "--out", str(tmp_path / "o.png"), *args])  # fmt: skip
    assert code == 2 and needle in capsys.readouterr().err


def test_translate_unreadable_image(checkpoint, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    code = evaluate_main(["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "bad.png"),
                          "--to", "palette", "--out", str(tmp_path / "o.png")])  # fmt: skip
    assert code == 2 and "bad.png: cannot read image" in capsys.readouterr().err


def test_paired_l1_json(checkpoint, capsys):
    assert evaluate_main(["paired-l1", "--checkpoint", str(checkpoint), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 2 and 0 < result["paired_l1"] < 2 and result["num_images"] == 12
