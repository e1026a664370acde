"""evaluate.py: fid, kid, accuracy, train-classifier, translate, paired-l1; errors are one line, exit 2."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gan.cli import evaluate_main, train_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("eval")
    (root / "tiny.yaml").write_text(TINY)
    assert (
        train_main(
            [
                "--config",
                str(root / "tiny.yaml"),
                "--run-dir",
                str(root / "run"),
                "--set",
                "train.steps=2",
                "--set",
                "train.lr_decay_steps=1",
            ]
        )
        == 0  # fmt: skip
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


def _logged(checkpoint, step):
    """What the training run logged at ``step`` (scalars.jsonl of the checkpoint's run)."""
    rows = [json.loads(line) for line in (checkpoint.parent.parent / "scalars.jsonl").read_text().splitlines()]
    return {k: v for row in rows if row["step"] == step for k, v in row.items()}


def test_paired_l1_json(checkpoint, capsys):
    assert evaluate_main(["paired-l1", "--checkpoint", str(checkpoint), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # By default the run's hooks.paired_l1.num_images (4 in TINY): the very numbers of its eval/paired_l1 curve.
    assert result["step"] == 2 and 0 < result["paired_l1"] < 2 and result["num_images"] == 4
    logged = _logged(checkpoint, 2)
    assert result["paired_l1"] == logged["eval/paired_l1"] and result["paired_psnr"] == logged["eval/paired_psnr"]
    assert evaluate_main(["paired-l1", "--checkpoint", str(checkpoint), "--num-images", "256", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_images"] == 12 and 0 < result["paired_psnr"] < 60  # every held-out image


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tests.conftest import write_images

    root = tmp_path_factory.mktemp("folders")
    return write_images(root / "a", 6, 16, seed=1), write_images(root / "b", 5, 16, seed=2, shift=0.3)


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_fid_of_two_folders_and_of_saved_stats(hub_weights, folders, tmp_path, capsys):
    a, b = folders
    assert evaluate_main(["fid", str(a), str(b), "--json"]) == 0
    direct = _json_out(capsys)
    assert direct["num_images"] == [6, 5] and direct["protocol"] == "pytorch_fid" and direct["extractor"] == "inception"
    assert direct["official_weights"] is False and direct["fid"] > 0
    stats = tmp_path / "a.npz"
    assert evaluate_main(["fid", "--save-stats", str(a), str(stats)]) == 0
    assert "wrote statistics of 6 images" in capsys.readouterr().out
    assert evaluate_main(["fid", "--save-stats", str(b), str(stats)]) == 2  # never overwrites silently
    assert "exists; pass --force" in capsys.readouterr().err
    assert evaluate_main(["fid", "--save-stats", str(a), str(stats), "--force"]) == 0
    capsys.readouterr()
    assert evaluate_main(["fid", str(stats), str(b), "--json"]) == 0
    assert _json_out(capsys)["fid"] == pytest.approx(direct["fid"], rel=1e-12)
    assert evaluate_main(["fid", str(stats), str(b), "--protocol", "tf1"]) == 2
    assert "statistics of protocol pytorch_fid" in capsys.readouterr().err


def test_kid_of_two_folders(hub_weights, folders, capsys):
    a, b = folders
    assert evaluate_main(["kid", str(a), str(b), "--subsets", "5", "--subset-size", "4", "--json"]) == 0
    result = _json_out(capsys)
    assert result["subsets"] == 5 and result["subset_size"] == 4 and result["kid_std"] >= 0
    assert evaluate_main(["kid", str(a), str(b), "--subsets", "3"]) == 0  # subset size capped at 5 images
    assert "3 subsets of 5" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["fid", "only-one"], "give two image folders"),
        (["fid", "missing-a", "missing-b"], "missing-a: no such folder"),
        (["kid", "x.npz", "y.npz"], "needs the images"),
        (["kid", "a", "b", "--subsets", "0"], "--subsets: must be at least 1"),
        (["fid", "--save-stats", "a", "b.txt"], "writes a .npz file"),
        (["fid", "one", "one"], "one: 1 image; FID and KID need at least 2"),
        (["kid", "one", "one"], "one: 1 image; FID and KID need at least 2"),
    ],
)
def test_fid_kid_argument_errors(hub_weights, args, needle, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "one").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "x.png")
    assert evaluate_main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_fid_without_weights_says_where_to_put_them(folders, capsys):
    a, b = folders
    assert evaluate_main(["fid", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "pt_inception-2015-12-05-6726825d.pth" in err and "hub" in err and err.count("\n") == 1


def test_fid_of_a_checkpoint_per_domain_with_cache(hub_weights, checkpoint, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["fid", "--checkpoint", str(checkpoint), "--num-images", "3", "--stats-cache", str(cache), "--json"]
    assert evaluate_main(args) == 0
    first = _json_out(capsys)
    assert set(first["domains"]) == {"palette", "outline", "texture"}
    assert first["fid_mean"] == pytest.approx(sum(d["fid"] for d in first["domains"].values()) / 3)
    assert first["domain_accuracy"] is not None  # the training run's hooks left <run>/classifier.pt
    assert 0 < first["paired_psnr"] and first["protocol"] == "pytorch_fid"
    assert len(list(cache.glob("*.features.npz"))) == 3  # real-image features (for KID), one file per domain
    stats = [p for p in cache.glob("*.npz") if not p.name.endswith(".features.npz")]
    assert len(stats) == 3 and {"mu", "sigma"} <= set(np.load(stats[0]).files)  # pytorch-fid's statistics format
    assert evaluate_main(args) == 0
    assert _json_out(capsys)["domains"] == first["domains"]  # from the cache: the same numbers


def test_train_classifier_then_accuracy(checkpoint, tmp_path, capsys):
    out = tmp_path / "clf.pt"
    assert evaluate_main(["train-classifier", "--checkpoint", str(checkpoint), "--steps", "40", "--out", str(out)]) == 0
    assert "held-out accuracy" in capsys.readouterr().out and out.is_file()
    assert (
        evaluate_main(
            ["accuracy", "--checkpoint", str(checkpoint), "--classifier", str(out), "--num-images", "8", "--json"]
        )
        == 0
    )
    result = _json_out(capsys)
    assert 0 <= result["domain_accuracy"] <= 1 and result["fid_mean"] is None
    assert all(d["num_fake"] == 8 for d in result["domains"].values())  # 3 x 4 held-out images, 4 per source domain
    assert evaluate_main(["accuracy", "--checkpoint", str(checkpoint), "--classifier", str(tmp_path / "none.pt")]) == 2
    assert "train-classifier" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["translate", "fid", "kid", "accuracy", "train-classifier", "paired-l1"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main([command, "--help"])
    assert exit_info.value.code == 0 and "--checkpoint" in capsys.readouterr().out


def test_multi_label_translate_keeps_the_inputs_attributes(tmp_path, capsys):
    """CelebA-style model: --to sets the attribute (its exclusive group cleared) on top of the input's own attributes,
    given by --labels or predicted by the run's classifier; without either, a one-line error says what to do."""
    import torch

    from gan.run import load_generator
    from tests.test_data import write_celeba

    data = write_celeba(tmp_path, n=16)
    config = tmp_path / "celeba.yaml"
    config.write_text(
        "data:\n  source: celeba\n  image_size: 8\n  celeba:\n"
        f"    image_dir: {data.celeba.image_dir}\n    attr_file: {data.celeba.attr_file}\n"
        "    attributes: [Black_Hair, Blond_Hair, Male]\n    test_count: 4\n"
        "model:\n  generator: {conv_dim: 4, repeat_num: 1}\n  discriminator: {conv_dim: 4, repeat_num: 2}\n"
        "train: {steps: 2, batch_size: 4, n_critic: 1, lr_decay_steps: 1, progress: false}\n"
        "hooks: {fid: {every: 0}, lipschitz: {every: 0}, images: {every: 0}}\n"
        "metrics: {classifier: {steps: 5, batch_size: 4}}\n"
    )
    run = tmp_path / "run"
    assert train_main(["--config", str(config), "--run-dir", str(run)]) == 0
    ckpt = run / "checkpoints" / "last.pt"
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((12, 10, 3), 90, dtype=np.uint8)).save(photo)
    base = ["translate", "--checkpoint", str(ckpt), "--input", str(photo), "--to", "Blond_Hair"]
    capsys.readouterr()
    assert evaluate_main([*base, "--out", str(tmp_path / "a.png")]) == 2
    assert "give them with --labels" in capsys.readouterr().err
    assert evaluate_main([*base, "--labels", "Black_Hair,Male", "--out", str(tmp_path / "a.png")]) == 0
    # The file holds G(x, [Black 0, Blond 1, Male 1]): blond, still male, no longer black-haired.
    G, space = load_generator(ckpt)
    assert space.groups == ((0, 1),)
    from gan.data import image_transform, load_rgb

    x = image_transform(8)(load_rgb(photo)).unsqueeze(0)
    with torch.no_grad():
        expected = G(x, torch.tensor([[0.0, 1.0, 1.0]]))
    saved = image_transform(8)(load_rgb(tmp_path / "a.png"))
    assert torch.allclose(saved, ((expected[0] + 1) / 2 * 255).round() / 127.5 - 1, atol=1 / 127.5 + 1e-6)
    assert evaluate_main(["train-classifier", "--checkpoint", str(ckpt), "--steps", "3"]) == 0
    assert evaluate_main([*base, "--out", str(tmp_path / "b.png")]) == 0  # attributes predicted by the classifier
    assert (tmp_path / "b.png").is_file()


def test_translate_reads_16_bit_and_float_images_like_training_does(checkpoint, tmp_path, capsys):
    """translate reads images with gan.data.load_rgb, like datasets and FID folders: a 16-bit PNG (which a plain RGB
    conversion would clip to white) is translated from its scaled 8-bit pixels, exactly as its 8-bit copy is; a
    float TIFF is refused with its name, and nothing is written."""
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGB", (16, 16), (156, 156, 156)).save(tmp_path / "flat.png")  # 40000 * 255 / 65535, rounded
    for name in ("deep", "flat"):
        assert evaluate_main(["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / f"{name}.png"),
                              "--to", "outline", "--out", str(tmp_path / f"{name}_out.png")]) == 0  # fmt: skip
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "deep_out.png")), np.asarray(Image.open(tmp_path / "flat_out.png"))
    )
    Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    code = evaluate_main(["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "float.tif"),
                          "--to", "outline", "--out", str(tmp_path / "out.png")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "float.tif: 32-bit float image" in err and not (tmp_path / "out.png").exists()


def test_translate_keeps_inputs_with_the_same_stem_apart(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(photos / "a.png")
    Image.new("RGB", (16, 16), (0, 0, 200)).save(photos / "a.jpg")
    out = tmp_path / "out"
    assert evaluate_main(["translate", "--checkpoint", str(checkpoint), "--input", str(photos), "--to", "outline",
                          "--out", str(out)]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg_to_outline.png", "a.png_to_outline.png"]
    assert "wrote 2 image(s)" in capsys.readouterr().out


def _translate(checkpoint, source, out, *args):
    return evaluate_main(["translate", "--checkpoint", str(checkpoint), "--input", str(source), "--out", str(out),
                          *args])  # fmt: skip


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("several", ["targets", "inputs"])
def test_translate_refuses_an_image_file_out_for_several_outputs(checkpoint, tmp_path, capsys, several):
    """Several outputs and an --out with an image suffix: refused before the checkpoint or any image is read (the
    checkpoint named here does not exist, one input is not an image), and nothing is created (it used to become a
    folder named two.png)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (16, 16)).save(photos / "a.png")
    (photos / "b.png").write_bytes(b"not a png")
    source, targets = (photos / "a.png", ["--to", "palette", "--to", "outline"]) if several == "targets" else \
        (photos, ["--to", "palette"])  # fmt: skip
    for model in (checkpoint, tmp_path / "missing.pt"):
        assert _translate(model, source, tmp_path / "two.png", *targets) == 2
        err = _one_error_line(capsys)
        assert "--out" in err and "two.png" in err and "several outputs need a folder" in err
        assert "2 outputs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_translate_size_input_keeps_the_whole_image_at_its_own_size(checkpoint, tmp_path):
    """--size input: G (fully convolutional) runs on the whole 41x27 image, each side rounded to a multiple of 4
    (40x28), not cropped, normalised as in training; the file holds exactly G of that resized image."""
    import torch

    from gan.run import load_generator

    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 256, (27, 41, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    out = tmp_path / "out.png"
    assert _translate(checkpoint, tmp_path / "wide.png", out, "--to", "outline", "--size", "input") == 0
    saved = np.asarray(Image.open(out))
    assert saved.shape == (28, 40, 3)
    G, space = load_generator(checkpoint)
    whole = np.asarray(Image.open(tmp_path / "wide.png").resize((40, 28), Image.BILINEAR))  # PIL's antialiased resize
    x = torch.from_numpy(whole).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1
    with torch.no_grad():
        y = G(x, space.vectors(space.parse("outline").unsqueeze(0)))
    expected = ((y[0] + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(saved.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "width, height, size, expected",
    [
        (41, 27, "input", (40, 28)),
        (50, 30, "input", (52, 32)),  # halves round up
        (3, 2, "input", (8, 8)),  # at least 8: a 4x4 input leaves instance norm a 1x1 map
        (50, 30, 48, (80, 48)),
        (30, 75, 48, (48, 120)),
        (999, 1000, 8, (8, 8)),
    ],
)
def test_working_size(width, height, size, expected):
    from gan.run import working_size

    assert working_size(width, height, size) == expected


def test_translate_size_n_sets_the_shorter_side(checkpoint, tmp_path):
    Image.new("RGB", (30, 75), (20, 200, 20)).save(tmp_path / "tall.jpg")
    assert _translate(checkpoint, tmp_path / "tall.jpg", tmp_path / "out", "--to", "texture", "--size", "48") == 0
    assert Image.open(tmp_path / "out" / "tall_to_texture.png").size == (48, 120)


def test_translate_size_model_is_the_default(checkpoint, tmp_path):
    rng = np.random.RandomState(1)
    Image.fromarray(rng.randint(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    assert _translate(checkpoint, tmp_path / "photo.png", tmp_path / "default.png", "--to", "palette") == 0
    assert _translate(checkpoint, tmp_path / "photo.png", tmp_path / "model.png", "--to", "palette",
                      "--size", "model") == 0  # fmt: skip
    default, model = np.asarray(Image.open(tmp_path / "default.png")), np.asarray(Image.open(tmp_path / "model.png"))
    assert default.shape == (16, 16, 3) and np.array_equal(default, model)


@pytest.mark.parametrize("value", ["0", "5", "-4", "big", "4", "2052", "12.0"])
def test_translate_refuses_bad_sizes_in_one_line(checkpoint, tmp_path, capsys, value):
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    assert _translate(checkpoint, tmp_path / "x.png", tmp_path / "o.png", "--to", "palette", "--size", value) == 2
    err = _one_error_line(capsys)
    assert err.startswith("error: --size: expected model, input or a multiple of 4") and repr(value) in err
    assert not (tmp_path / "o.png").exists()


def test_translate_refuses_sizes_over_the_pixel_limit(checkpoint, tmp_path, capsys):
    """--size input on a 2100x2100 image would need about 2 GB: refused from the file header, nothing written; a
    smaller --size N translates the same file."""
    Image.new("RGB", (2100, 2100)).save(tmp_path / "huge.png")
    assert _translate(checkpoint, tmp_path / "huge.png", tmp_path / "o.png", "--to", "palette", "--size", "input") == 2
    err = _one_error_line(capsys)
    assert "--size input" in err and "huge.png" in err and "2100x2100" in err and "limit of 4.2 Mpixel" in err
    assert not (tmp_path / "o.png").exists()
    assert _translate(checkpoint, tmp_path / "huge.png", tmp_path / "o.png", "--to", "palette", "--size", "16") == 0
    assert Image.open(tmp_path / "o.png").size == (16, 16)


def _same_as_the_hook(result, logged, fd, kd):
    """The CLI's per-domain and mean distances and accuracy are the numbers the fid hook logged, exactly."""
    for name, scores in result["domains"].items():
        assert scores["fid"] == logged[f"eval/{fd}/{name}"]
        assert scores["num_fake"] == scores["num_real"] == 4  # hooks.fid.num_images of TINY, not a CLI default
    assert result["fid_mean"] == logged[f"eval/{fd}/mean"] and result["kid_mean"] == logged[f"eval/{kd}/mean"]
    assert result["domain_accuracy"] == logged["eval/domain_accuracy"]


def test_fid_of_a_checkpoint_is_what_the_hook_logged_offline(checkpoint, capsys, caplog):
    # No Inception weights anywhere: the run logged classifier features (hooks.fid.extractor auto), and so does the
    # CLI, with the same warning, the same classifier (the run's) and the same images.
    with caplog.at_level("WARNING", logger="gan"):
        assert evaluate_main(["fid", "--checkpoint", str(checkpoint), "--json"]) == 0
    result = _json_out(capsys)
    assert "with the domain classifier's features instead" in caplog.text
    assert result["extractor"] == "classifier" and result["weights"] == str(checkpoint.parent.parent / "classifier.pt")
    _same_as_the_hook(result, _logged(checkpoint, 2), "classifier_fd", "classifier_kd")
    assert result["sample_sizes"] == "4 translations vs 4 real images per target domain"
    assert evaluate_main(["kid", "--checkpoint", str(checkpoint)]) == 0  # the text names the sample sizes too
    assert "4 translations vs 4 real images per target domain" in capsys.readouterr().out


def test_fid_of_a_checkpoint_is_what_the_hook_logged_with_inception(hub_weights, tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    steps = ["--set", "train.steps=2", "--set", "train.lr_decay_steps=1"]
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run), *steps]) == 0
    capsys.readouterr()
    logged = _logged(run / "checkpoints" / "last.pt", 2)
    assert evaluate_main(["fid", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--json"]) == 0
    result = _json_out(capsys)
    assert result["extractor"] == "inception"
    _same_as_the_hook(result, logged, "fid", "kid")
    status = json.loads((run / "status.json").read_text())
    assert status["evaluation"]["sample_sizes"] == result["sample_sizes"]  # what the numbers in "final" rest on
    assert status["evaluation"]["images"] == {d: {"fake": 4, "real": 4} for d in result["domains"]}
    assert status["evaluation"]["weights"] == str(hub_weights) and status["evaluation"]["real_split"] == "train"
    # TensorBoard: every distance tag describes its sample sizes, and the TEXT tab says what they compare with.
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    described = {tag: acc.SummaryMetadata(tag).summary_description for tag in acc.Tags()["tensors"]}
    assert result["sample_sizes"] in described["eval/fid/mean"] and result["sample_sizes"] in described["eval/kid/mean"]
    assert "between 4 translations into palette and 4 real palette images" in described["eval/fid/palette"]
    about = acc.Tensors("eval/about")[0].tensor_proto.string_val[0].decode()
    assert "4 translations vs 4 real images per target domain" in about and "published FIDs" in about


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("missing", "G does not fit the generator its config describes (1 missing, 0 unexpected tensors, e.g. "),
        ("extra", "G does not fit the generator its config describes (0 missing, 1 unexpected tensors, e.g. extra"),
        ("shape", ": (1, 1, 1, 1) in the file, ("),
        ("flipped byte", "fails its CRC-32 check"),
    ],
)
def test_a_damaged_generator_is_one_line(checkpoint, tmp_path, capsys, change, needle):
    """paired-l1 (and translate, fid --checkpoint) load G through one path: a state that does not fit the model, or a
    changed byte, is one line and exit 2, never a traceback or a silently changed model."""
    state = torch.load(checkpoint, weights_only=True)
    state.pop("G_ema", None)
    name = next(k for k, v in state["G"].items() if v.dim() == 4)  # a conv weight
    if change == "missing":
        del state["G"][name]
    elif change == "extra":
        state["G"]["extra.weight"] = torch.zeros(1)
    elif change == "shape":
        state["G"][name] = torch.zeros(1, 1, 1, 1)
    bad = tmp_path / "run" / "checkpoints" / "last.pt"
    bad.parent.mkdir(parents=True)
    torch.save(state, bad)
    if change == "flipped byte":
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0x10
        bad.write_bytes(bytes(data))
    assert evaluate_main(["paired-l1", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "last.pt" in err and needle in err, err


def test_translate_never_overwrites_without_force(checkpoint, tmp_path, capsys):
    Image.new("RGB", (20, 20), (200, 30, 30)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    out.mkdir()
    kept = out / "photo_to_texture.png"
    kept.write_bytes(b"mine")
    args = ["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "photo.png"), "--to", "palette",
            "--to", "texture", "--out", str(out)]  # fmt: skip
    assert evaluate_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "photo_to_texture.png exists (1 of 2 outputs); add --force" in err
    assert kept.read_bytes() == b"mine" and not (out / "photo_to_palette.png").exists()  # nothing written
    assert evaluate_main([*args, "--force"]) == 0
    assert Image.open(kept).size == (16, 16)  # replaced by the translation


def test_translate_refuses_two_outputs_on_one_file(checkpoint, tmp_path, capsys):
    Image.new("RGB", (20, 20)).save(tmp_path / "photo.png")
    args = ["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "photo.png"), "--to", "night",
            "--to", "night", "--out", str(tmp_path / "out")]  # fmt: skip
    assert evaluate_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would both be written to photo_to_night.png" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["paired-l1", "--num-images", "0"], "--num-images: must be at least 1, got 0"),
        (["paired-l1", "--num-images", "-1"], "--num-images: must be at least 1, got -1"),
        (["accuracy", "--num-images", "0"], "--num-images: must be at least 1, got 0"),
        (["fid", "--num-images", "1"], "--num-images: must be at least 2, got 1"),
        (["kid", "--subset-size", "1"], "--subset-size: must be at least 2, got 1"),
    ],
)
def test_checkpoint_commands_refuse_too_few_images_in_one_line(checkpoint, capsys, args, needle):
    assert evaluate_main([args[0], "--checkpoint", str(checkpoint), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
