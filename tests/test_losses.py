"""Losses: exact values on hand-made inputs, and penalties against closed forms."""

import pytest
import torch
import torch.nn.functional as F

from gan.losses import (
    ADVERSARIAL_LOSSES,
    classification_loss,
    gradient_penalty,
    r1_penalty,
    reconstruction_loss,
)

REAL = torch.tensor([[0.5, 2.0], [-1.0, 0.0]], dtype=torch.float64)
FAKE = torch.tensor([[-0.5, 1.0], [3.0, -2.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    "name, d_expected, g_expected",
    [
        ("wgan", FAKE.mean() - REAL.mean(), -FAKE.mean()),
        ("hinge", (1 - REAL).clamp(min=0).mean() + (1 + FAKE).clamp(min=0).mean(), -FAKE.mean()),
        (
            "nonsaturating",
            -F.logsigmoid(REAL).mean() - torch.log1p(-torch.sigmoid(FAKE)).mean(),
            -F.logsigmoid(FAKE).mean(),
        ),
        ("lsgan", 0.5 * ((REAL - 1) ** 2).mean() + 0.5 * (FAKE**2).mean(), 0.5 * ((FAKE - 1) ** 2).mean()),
    ],
)
def test_adversarial_losses(name, d_expected, g_expected):
    loss = ADVERSARIAL_LOSSES.get(name)
    torch.testing.assert_close(loss.d(REAL, FAKE), d_expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(loss.g(FAKE), g_expected, atol=1e-12, rtol=0)


def test_gradient_penalty_of_an_affine_critic_is_closed_form():
    w = torch.randn(3 * 4 * 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)

    def critic(x):
        return x.flatten(1) @ w

    real = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    fake = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake)
    norm = w.detach().norm()
    torch.testing.assert_close(gp, (norm - 1) ** 2, atol=1e-9, rtol=0)
    gp.backward()
    torch.testing.assert_close(w.grad, 2 * (norm - 1) * w.detach() / norm, atol=1e-8, rtol=0)


def test_r1_of_a_quadratic_critic():
    real = torch.randn(4, 2, 3, 3, dtype=torch.float64).requires_grad_(True)
    logits = (real**2).sum((1, 2, 3))  # gradient 2x
    expected = 0.5 * (2 * real.detach()).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(r1_penalty(logits, real), expected, atol=1e-12, rtol=0)


def test_classification_losses():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    single = torch.tensor([0, 2])
    torch.testing.assert_close(classification_loss(logits, single, False), F.cross_entropy(logits, single))
    multi = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    manual = -(multi * F.logsigmoid(logits) + (1 - multi) * F.logsigmoid(-logits)).sum() / 2
    torch.testing.assert_close(classification_loss(logits, multi, True), manual)


def test_reconstruction_loss():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), -0.25)
    assert reconstruction_loss(a, b).item() == pytest.approx(0.25)
