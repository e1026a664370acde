"""StarGAN's image transform: flip (train only), centre crop, resize, to a tensor in [-1, 1]; and a crop-free resize
to any size, for applying a trained generator at another resolution."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image
from torch import Tensor
from torchvision import transforms as T


class CenterSquareCrop:
    """Centre crop to a square whose side is the image's shorter side (used when ``data.crop_size`` is 0)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        side = min(image.size)
        return T.functional.center_crop(image, [side, side])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _to_signed_tensor() -> list[Callable]:
    """PIL image -> float32 (3, H, W) in [-1, 1], the range G reads and writes (tanh)."""
    return [T.ToTensor(), T.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))]


def image_transform(image_size: int, crop_size: int = 0, flip: bool = False) -> Callable[[Image.Image], Tensor]:
    """PIL image -> float32 (3, image_size, image_size) in [-1, 1]; ``flip`` adds a random horizontal flip."""
    steps: list[Callable] = []
    if flip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.CenterCrop(crop_size) if crop_size > 0 else CenterSquareCrop())
    # After the square crop an int size gives exactly image_size x image_size; antialias matches PIL's downscaling.
    steps.append(T.Resize(image_size, antialias=True))
    return T.Compose(steps + _to_signed_tensor())


def resize_transform(width: int, height: int) -> Callable[[Image.Image], Tensor]:
    """PIL image -> float32 (3, height, width) in [-1, 1]: the whole image (no crop) resized to exactly that size,
    with the antialiased resize and the normalisation of :func:`image_transform`."""
    return T.Compose([T.Resize((height, width), antialias=True), *_to_signed_tensor()])
