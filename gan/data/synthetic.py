"""Built-in synthetic style domains: random layouts of shapes, each rendered in several looks (the domains)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gan.data.base import DataBundle, PairedSet, TensorImageDataset, uint8_to_unit
from gan.errors import ConfigError
from gan.registry import Registry

SHAPES = ("circle", "square", "triangle")
MAX_SHAPES = 3
# One colour class per shape kind: every style is then a function of the layout alone, so a colourless style
# (outline) can be translated back to a coloured one by recognising the shapes.
KIND_RGB = torch.tensor([[0.92, 0.16, 0.14], [0.12, 0.38, 0.92], [0.98, 0.76, 0.06]])

StyleFn = Callable[["Geometry"], Tensor]
STYLES: Registry[StyleFn] = Registry("synthetic style")


@dataclass(frozen=True)
class Content:
    """Layouts of up to MAX_SHAPES shapes, painted in slot order (later slots on top); units of the image side."""

    kinds: Tensor  # (N, K) int64 index into SHAPES
    centers: Tensor  # (N, K, 2) float32 (x, y) in [0, 1], y pointing down
    radii: Tensor  # (N, K) float32 half-extent of each shape
    active: Tensor  # (N, K) bool; inactive slots are not drawn

    def __len__(self) -> int:
        return self.kinds.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Content:
        if isinstance(index, int):
            index = slice(index, index + 1)  # keep the batch dimension
        return Content(self.kinds[index], self.centers[index], self.radii[index], self.active[index])

    @staticmethod
    def cat(parts: list[Content]) -> Content:
        """Concatenate layouts along the batch dimension."""
        fields = ("kinds", "centers", "radii", "active")
        return Content(*(torch.cat([getattr(part, name) for part in parts]) for name in fields))


@dataclass(frozen=True)
class Geometry:
    """What a style needs: per-shape signed distances in pixels (negative inside) and the pixel grid."""

    content: Content
    distance: Tensor  # (N, K, S, S), zero-crossing on the shape's edge
    size: int

    def grid(self) -> tuple[Tensor, Tensor]:
        """Pixel-centre coordinates relative to the image centre, in pixels: x (1, S), y (S, 1)."""
        coords = torch.arange(self.size, dtype=torch.float32) + 0.5 - self.size / 2
        return coords.view(1, -1), coords.view(-1, 1)

    def coverage(self) -> Tensor:
        """(N, K, S, S) anti-aliased fill alpha: a one-pixel ramp across each edge, zero for inactive slots."""
        return (0.5 - self.distance).clamp(0.0, 1.0) * self._active()

    def stroke(self, width: float) -> Tensor:
        """(N, K, S, S) alpha of a line ``width`` pixels wide centred on each edge, anti-aliased like the fill."""
        return (0.5 * width + 0.5 - self.distance.abs()).clamp(0.0, 1.0) * self._active()

    def kind_rgb(self) -> Tensor:
        """(N, K, 3, 1, 1) the colour class of each shape."""
        return KIND_RGB[self.content.kinds][..., None, None]

    def _active(self) -> Tensor:
        return self.content.active[..., None, None].float()


def random_content(n: int, generator: torch.Generator) -> Content:
    """``n`` random layouts of 1-MAX_SHAPES shapes; shapes may overlap, later ones on top."""
    count = torch.randint(1, MAX_SHAPES + 1, (n, 1), generator=generator)
    active = torch.arange(MAX_SHAPES).view(1, -1) < count
    kinds = torch.randint(0, len(SHAPES), (n, MAX_SHAPES), generator=generator)
    radii = 0.12 + 0.14 * torch.rand(n, MAX_SHAPES, generator=generator)
    # Keep every shape inside the frame (triangles reach about 1.1 radii from their centre).
    margin = 1.15 * radii[..., None] + 0.02
    centers = margin + (1 - 2 * margin) * torch.rand(n, MAX_SHAPES, 2, generator=generator)
    return Content(kinds, centers, radii, active)


def stream_generator(seed: int, stream: str) -> torch.Generator:
    """An independent, reproducible RNG per (seed, stream), e.g. one for each domain's training content."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def signed_distance(content: Content, size: int) -> Tensor:
    """(N, K, S, S) signed distance in pixels to each shape's edge (exact for circle/square, mitred triangle)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    dx = coords.view(1, 1, 1, -1) - content.centers[..., 0, None, None]
    dy = coords.view(1, 1, -1, 1) - content.centers[..., 1, None, None]
    r = content.radii[..., None, None]
    circle = torch.hypot(dx, dy) - r
    half = 0.85 * r  # a slightly smaller square so the three kinds cover similar areas
    qx, qy = dx.abs() - half, dy.abs() - half
    square = torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)
    # Upright equilateral triangle as the max of three half-planes; inradius 0.6 r, moved down by half of it so
    # its bounding box is centred on the shape's centre.
    inradius = 0.6 * r
    ty = dy - 0.5 * inradius
    sin60 = math.sqrt(3) / 2
    edges = torch.maximum(ty, torch.maximum(sin60 * dx - 0.5 * ty, -sin60 * dx - 0.5 * ty))
    triangle = edges - inradius
    kinds = content.kinds[..., None, None]
    distance = torch.where(kinds == 0, circle, torch.where(kinds == 1, square, triangle))
    return distance * size


def _composite(background: Tensor, layers: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Paint (colour, alpha) layers over ``background`` in order; colours (N, 3, *) and alphas (N, 1, S, S)."""
    image = background
    for colour, alpha in layers:
        image = torch.lerp(image, colour.expand_as(image), alpha)
    return image


def _background(n: int, size: int, rgb: tuple[float, float, float]) -> Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, size, size)


def _line_width(size: int) -> float:
    return max(1.25, size / 22)  # about 1.5 px at 32 px: visible yet thin, growing with the image


@STYLES.register("palette")
def palette(geo: Geometry) -> Tensor:
    """Flat vivid colours on a light cream background."""
    alpha, rgb = geo.coverage(), geo.kind_rgb()
    layers = [(rgb[:, k], alpha[:, k, None]) for k in range(alpha.shape[1])]
    return _composite(_background(alpha.shape[0], geo.size, (0.97, 0.91, 0.78)), layers)


@STYLES.register("outline")
def outline(geo: Geometry) -> Tensor:
    """Dark outlines only, on white; a shape's white inside hides the outlines below it."""
    fill, line = geo.coverage(), geo.stroke(_line_width(geo.size))
    white, ink = torch.ones(1, 3, 1, 1), torch.tensor([0.08, 0.08, 0.10]).view(1, 3, 1, 1)
    layers = []
    for k in range(fill.shape[1]):
        layers += [(white, fill[:, k, None]), (ink, line[:, k, None])]
    return _composite(_background(fill.shape[0], geo.size, (1.0, 1.0, 1.0)), layers)


def _patterns(geo: Geometry) -> Tensor:
    """(N, K, S, S) in [0, 1]: horizontal stripes (circle), checker (square), vertical stripes (triangle).

    Cosines of centred coordinates are even in x, so a mirrored image is exactly the rendering of the mirrored
    layout and the random training flip stays inside the domain.
    """
    period = max(4.0, geo.size / 8)
    x, y = geo.grid()
    wx, wy = torch.cos(2 * math.pi * x / period), torch.cos(2 * math.pi * y / period)
    # A slope of one unit per pixel at each zero crossing: crisp bands with a one-pixel anti-aliased edge.
    gain = period / (2 * math.pi)
    horizontal = (0.5 + gain * wy).clamp(0, 1).expand(geo.size, geo.size)
    vertical = (0.5 + gain * wx).clamp(0, 1).expand(geo.size, geo.size)
    checker = (0.5 + 2 * gain * wx * wy).clamp(0, 1)
    kinds = geo.content.kinds[..., None, None]
    return torch.where(kinds == 0, horizontal, torch.where(kinds == 1, checker, vertical))


@STYLES.register("texture")
def texture(geo: Geometry) -> Tensor:
    """Shapes filled with a two-tone pattern of their colour (stripes or checker by kind) on mid grey."""
    alpha, rgb, pattern = geo.coverage(), geo.kind_rgb(), _patterns(geo)
    fill = torch.lerp(rgb, 0.3 * rgb, pattern[:, :, None])  # (N, K, 3, S, S)
    layers = [(fill[:, k], alpha[:, k, None]) for k in range(alpha.shape[1])]
    return _composite(_background(alpha.shape[0], geo.size, (0.58, 0.60, 0.62)), layers)


@STYLES.register("night")
def night(geo: Geometry) -> Tensor:
    """Dim shapes with a soft glow on a dark blue sky that brightens towards the bottom."""
    n, size = geo.distance.shape[0], geo.size
    _, y = geo.grid()
    t = (y / size + 0.5).view(1, 1, size, 1)  # 0 at the top, 1 at the bottom
    top, bottom = torch.tensor([0.02, 0.03, 0.12]), torch.tensor([0.05, 0.09, 0.28])
    sky = torch.lerp(top.view(1, 3, 1, 1), bottom.view(1, 3, 1, 1), t).expand(n, 3, size, size)
    dim = 0.55 * geo.kind_rgb() + 0.12  # darker and greyer than palette, yet clear of the blue sky
    glow = 0.6 * torch.exp(-geo.distance.clamp(min=0) / (size / 14)) * geo.content.active[..., None, None]
    alpha = geo.coverage()
    layers = []
    for k in range(alpha.shape[1]):
        layers += [(dim[:, k], glow[:, k, None]), (dim[:, k], alpha[:, k, None])]
    return _composite(sky, layers)


@STYLES.register("blueprint")
def blueprint(geo: Geometry) -> Tensor:
    """White outlines over faint lighter fills on blueprint blue."""
    fill, line = geo.coverage(), geo.stroke(_line_width(geo.size))
    wash, ink = torch.tensor([0.22, 0.44, 0.80]).view(1, 3, 1, 1), torch.tensor([0.93, 0.96, 1.0]).view(1, 3, 1, 1)
    layers = []
    for k in range(fill.shape[1]):
        layers += [(wash, fill[:, k, None]), (ink, line[:, k, None])]
    return _composite(_background(fill.shape[0], geo.size, (0.10, 0.28, 0.66)), layers)


def render_uint8(content: Content, style: str, size: int) -> Tensor:
    """(N, 3, S, S) uint8 rendering, in chunks so that 128 px batches stay within a few hundred MB."""
    try:
        style_fn = STYLES.get(style)
    except KeyError as exc:
        raise ConfigError(f"data.synthetic.domains: {exc}") from None
    chunk = max(1, 2**21 // (size * size))
    out = torch.empty(len(content), 3, size, size, dtype=torch.uint8)
    for start in range(0, len(content), chunk):
        part = content[start : start + chunk]
        image = style_fn(Geometry(part, signed_distance(part, size), size))
        # 8-bit like real image files, so every source hands the model the same kind of pixels.
        out[start : start + chunk] = image.clamp(0, 1).mul(255).round().to(torch.uint8)
    return out


def render(content: Content, style: str, size: int) -> Tensor:
    """(N, 3, S, S) float32 in [-1, 1]: ``content`` in ``style``, exactly the pixels the datasets return."""
    return uint8_to_unit(render_uint8(content, style, size))


class SyntheticDataset(TensorImageDataset):
    """Rendered images together with the layouts they show, so tests and evaluation can re-render them."""

    def __init__(self, images: Tensor, labels: Tensor, content: Content, flip: bool = False) -> None:
        super().__init__(images, labels, flip=flip)
        self.content = content


def build_synthetic(
    domains: list[str],
    images_per_domain: int,
    test_images_per_domain: int,
    seed: int,
    image_size: int,
    train_flip: bool = True,
) -> DataBundle:
    """Unpaired training sets (own layouts per domain) and a paired test set with layouts of its own."""
    size, n_domains = image_size, len(domains)
    if n_domains == 0:
        raise ConfigError("data.synthetic.domains: needs at least one style")
    # Streams are keyed by style name: a domain's training layouts do not change when the domain list is reordered.
    contents = [random_content(images_per_domain, stream_generator(seed, f"train/{s}")) for s in domains]
    images = torch.cat([render_uint8(c, s, size) for c, s in zip(contents, domains)])
    labels = torch.arange(n_domains).repeat_interleave(images_per_domain)
    train = SyntheticDataset(images, labels, Content.cat(contents), flip=train_flip)

    test_content = random_content(n_domains * test_images_per_domain, stream_generator(seed, "test"))
    test_labels = torch.arange(n_domains).repeat_interleave(test_images_per_domain)
    targets = torch.stack([render_uint8(test_content, s, size) for s in domains], dim=1)
    test_images = targets[torch.arange(len(test_content)), test_labels]
    test = SyntheticDataset(test_images, test_labels, test_content, flip=False)
    paired = PairedSet(uint8_to_unit(test_images), test_labels.clone(), uint8_to_unit(targets))
    return DataBundle(train, test, list(domains), multi_label=False, paired=paired)
