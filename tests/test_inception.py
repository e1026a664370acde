"""The FID Inception network and its protocols against the references (pytorch-fid, torch-fidelity) with the same
weights file (seeded random values in the standard layout, made on the spot) and the same PNG images."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gan.errors import UserError
from gan.metrics.features import InceptionExtractor, folder_features
from gan.metrics.fid import feature_statistics, frechet_distance
from gan.metrics.inception import (
    WEIGHTS_ALIASES,
    FIDInceptionV3,
    WeightsError,
    find_weights,
    fold_batchnorm,
    load_inception,
    preprocess,
    resize_tf1,
    to_uint8,
)
from tests.conftest import write_images

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fid-images")
    return write_images(root / "a", 20, 32, seed=1), write_images(root / "b", 20, 32, seed=2, shift=0.3)


def _fid(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


def test_state_dict_layout_is_torchvision_inception_v3():
    reference = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    ours = FIDInceptionV3().state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()
    }


def test_features_equal_pytorch_fid_bitwise(hub_weights: Path):
    from pytorch_fid.inception import InceptionV3

    reference = InceptionV3([3]).eval()  # reads the hub cache file that hub_weights put there
    images = torch.randint(0, 256, (3, 3, 40, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        expected = reference(images.float() / 255)[0].flatten(1)
    exact = InceptionExtractor(hub_weights, fast=False)(images)
    fast = InceptionExtractor(hub_weights, fast=True)(images)
    assert torch.equal(exact, expected)
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_fid_equals_pytorch_fid(hub_weights: Path, image_sets: tuple[Path, Path], pytorch_fid_sqrtm):
    from pytorch_fid.fid_score import calculate_fid_given_paths

    a, b = image_sets
    expected = calculate_fid_given_paths([str(a), str(b)], 50, "cpu", 2048, num_workers=0)
    for fast in (False, True):
        extractor = InceptionExtractor(protocol="pytorch_fid", fast=fast)  # found in the hub cache
        ours = _fid(folder_features(extractor, a), folder_features(extractor, b))
        assert ours == pytest.approx(expected, rel=1e-6), fast


def test_tf1_fid_and_kid_equal_torch_fidelity(hub_weights: Path, image_sets: tuple[Path, Path]):
    import torch_fidelity

    from gan.metrics.kid import kernel_inception_distance

    a, b = image_sets
    ref = torch_fidelity.calculate_metrics(
        input1=str(a), input2=str(b), cuda=False, fid=True, kid=True, kid_subsets=10, kid_subset_size=16,
        samples_shuffle=False, cache=False, save_cpu_ram=True, verbose=False,
        feature_extractor_weights_path=str(hub_weights),
    )  # fmt: skip
    extractor = InceptionExtractor(hub_weights, protocol="tf1")
    fa, fb = folder_features(extractor, a), folder_features(extractor, b)
    kid_mean, kid_std = kernel_inception_distance(fa, fb, subsets=10, subset_size=16)
    assert _fid(fa, fb) == pytest.approx(ref["frechet_inception_distance"], rel=1e-5)
    assert kid_mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-5)
    assert kid_std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)
    # The two protocols are genuinely different numbers (about 1 %): results must say which one they are.
    pt = InceptionExtractor(hub_weights, protocol="pytorch_fid")
    assert abs(_fid(folder_features(pt, a), folder_features(pt, b)) / _fid(fa, fb) - 1) > 1e-3


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 48, 20), (1, 3, 512, 300), (1, 3, 299, 299)])
def test_tf1_resize_matches_torch_fidelity_bitwise(shape):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1)).float()
    expected = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert torch.equal(resize_tf1(x, 299), expected)


def test_fold_batchnorm_keeps_the_function(inception_weights: Path):
    net = load_inception(inception_weights)
    x = preprocess(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), "pytorch_fid")
    with torch.no_grad():
        expected = net(x)
        folded = fold_batchnorm(net)(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_preprocess_rejects_float_and_unknown_protocol():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(torch.zeros(1, 3, 8, 8), "pytorch_fid")
    with pytest.raises(ValueError, match="pytorch_fid, tf1"):
        preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "clean")


def test_to_uint8_quantises_like_a_png():
    x = torch.tensor([-1.5, -1.0, -0.001, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, -1)
    assert to_uint8(x).flatten().tolist() == [0, 0, 127, 128, 191, 255, 255]


def test_missing_weights_error_names_places_and_source(tmp_path: Path):
    with pytest.raises(WeightsError) as err:
        find_weights()
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, UserError)
    for text in (*WEIGHTS_ALIASES, "hub", "6726825d", "https://github.com/mseitzer/pytorch-fid", "inception_weights"):
        assert text in message
    with pytest.raises(WeightsError, match=str(tmp_path / "nope.pth")):
        find_weights(tmp_path / "nope.pth")


@pytest.mark.parametrize("content", ["garbage", "wrong_layout", "not_a_dict"])
def test_wrong_weights_file_is_a_one_line_error(tmp_path: Path, content: str):
    path = tmp_path / "w.pth"
    if content == "garbage":
        path.write_bytes(b"\x00not a torch file")
    elif content == "wrong_layout":
        torch.save({"conv.weight": torch.zeros(3)}, path)
    else:
        torch.save([torch.zeros(3)], path)
    with pytest.raises(WeightsError) as err:
        InceptionExtractor(path)
    assert str(path) in str(err.value) and "6726825d" in str(err.value) and "\n" not in str(err.value)


def test_unofficial_weights_are_recorded_not_hidden(inception_weights: Path, caplog):
    extractor = InceptionExtractor(inception_weights)
    assert extractor.info["official_weights"] is False and extractor.info["protocol"] == "pytorch_fid"
    assert "not the published" in caplog.text


def test_weights_path_that_is_a_folder(tmp_path: Path):
    with pytest.raises(WeightsError, match="is a folder"):
        find_weights(tmp_path)


def test_wrong_layout_message_is_short(tmp_path: Path):
    path = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="566 missing, 1 unexpected") as err:
        load_inception(path)
    assert len(str(err.value)) < 400


def test_auto_extractor_never_replaces_a_configured_path(tmp_path: Path):
    from gan.build import build_extractor
    from gan.config import load_config

    cfg = load_config(overrides=[f"metrics.inception_weights={tmp_path / 'typo.pth'}"])
    with pytest.raises(WeightsError, match="typo.pth"):
        build_extractor("auto", cfg, torch.device("cpu"), classifier=torch.nn.Identity())
