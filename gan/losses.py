"""Losses as small pure functions: adversarial losses by name, gradient penalty, R1, classification, reconstruction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gan.registry import Registry


@dataclass(frozen=True)
class AdversarialLoss:
    """A GAN objective: ``d(real_logits, fake_logits)`` for the critic, ``g(fake_logits)`` for the generator.

    Logits may be PatchGAN maps; every loss averages over all patches, as StarGAN does.
    """

    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]
    # The output that separates "real" from "fake" (for D's over-fitting signal r_t = E[sign(D(x) - threshold)]);
    # None: the loss fixes no such level (a WGAN critic is defined up to a constant), use the midpoint of D's mean
    # outputs on reals and fakes.
    threshold: float | None = 0.0


ADVERSARIAL_LOSSES: Registry[AdversarialLoss] = Registry("adversarial loss")

ADVERSARIAL_LOSSES.add(
    "wgan",  # Wasserstein critic (StarGAN's choice, with the gradient penalty)
    AdversarialLoss(d=lambda real, fake: fake.mean() - real.mean(), g=lambda fake: -fake.mean(), threshold=None),
)
ADVERSARIAL_LOSSES.add(
    "hinge",  # SNGAN's choice for spectrally normalised critics
    AdversarialLoss(
        d=lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(), g=lambda fake: -fake.mean()
    ),
)
ADVERSARIAL_LOSSES.add(
    "nonsaturating",  # the original GAN loss with the non-saturating generator objective
    AdversarialLoss(
        d=lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(), g=lambda fake: F.softplus(-fake).mean()
    ),
)
ADVERSARIAL_LOSSES.add(
    "lsgan",  # least squares GAN with targets 1 (real) and 0 (fake)
    AdversarialLoss(
        d=lambda real, fake: 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean(),
        g=lambda fake: 0.5 * ((fake - 1) ** 2).mean(),
        threshold=0.5,
    ),
)


def _input_gradient(output: torch.Tensor, inputs: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """d sum(output) / d inputs with a graph, so that a penalty on it can be back-propagated (double backward).

    ``scale`` (fp16 training: the GradScaler's current scale) follows PyTorch's AMP recipe for gradient penalties:
    the output is scaled before the gradient is taken, so that small fp16 gradients do not flush to zero, and the
    gradient is unscaled afterwards (an overflow gives inf, and the scaler skips that step)."""
    total = output.sum() if scale is None else output.sum() * scale
    (grad,) = torch.autograd.grad(total, inputs, create_graph=True)
    grad = grad.flatten(1)
    return grad if scale is None else grad / scale


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    scale: float | None = None,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP: mean over the batch of (||grad_x critic(x_hat)|| - 1)^2 on random interpolates of real and fake.

    As in StarGAN, the gradient is that of the sum over the PatchGAN map. A tiny constant inside the square root
    keeps its gradient finite if the input gradient is exactly zero. ``scale``: see :func:`_input_gradient`.
    ``alpha``: the interpolation factor of each sample (x_hat = alpha real + (1 - alpha) fake), uniform at random
    from the global RNG when None (the trainer draws them from its per-step generator).
    """
    if alpha is None:
        alpha = torch.rand(real.size(0), device=real.device, dtype=real.dtype)
    alpha = alpha.to(device=real.device, dtype=real.dtype).reshape(-1, 1, 1, 1)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach().to(real.dtype)).requires_grad_(True)
    grad = _input_gradient(critic(x_hat), x_hat, scale)
    norm = torch.sqrt(grad.pow(2).sum(1) + 1e-12)
    return ((norm - 1) ** 2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): 0.5 * mean over the batch of ||grad_x D(x)||^2 on real images.

    ``real`` must have ``requires_grad`` set before ``real_logits`` were computed from it. ``scale``: see
    :func:`_input_gradient`.
    """
    grad = _input_gradient(real_logits, real, scale)
    return 0.5 * grad.pow(2).sum(1).mean()


def classification_loss(logits: torch.Tensor, target: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Domain classification: BCE summed over attributes per sample (multi-label, as StarGAN on CelebA) or
    cross-entropy over domains (single-label)."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.size(0)
    return F.cross_entropy(logits, target)


def reconstruction_loss(original: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """Cycle reconstruction: mean absolute error between x and G(G(x, c_trg), c_org)."""
    return (original - reconstructed).abs().mean()
