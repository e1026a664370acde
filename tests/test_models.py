"""Models: StarGAN's exact architecture (parameter counts from the published code), shapes, norm choice, SN."""

import pytest
import torch
from torch import nn

from gan.build import build_discriminator, build_generator
from gan.config import DiscriminatorConfig, GeneratorConfig, SpectralNormConfig
from gan.models import Discriminator, Generator
from gan.models.modes import evaluating
from gan.norms import BatchInstanceNorm2d
from gan.spectral import has_spectral_norm, spectral_norm_modules


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_stargan_parameter_counts():
    # yunjey/stargan prints 8,430,528 (G, c_dim=5) and 44,762,048 (D at 128 px); see reference/anchors.md.
    assert _count(Generator(5, 64, 6)) == 8_430_528
    assert _count(Discriminator(128, 5, 64, 6)) == 44_762_048


def test_generator_shapes_and_label_channels():
    G = build_generator(GeneratorConfig(conv_dim=8, repeat_num=2), num_domains=4)
    x = torch.randn(2, 3, 32, 32)
    c = torch.eye(4)[[0, 3]]
    y = G(x, c)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert G.main[0].in_channels == 3 + 4
    # the label really conditions the output
    assert not torch.allclose(G(x, torch.eye(4)[[1, 1]]), G(x, torch.eye(4)[[2, 2]]))


@pytest.mark.parametrize("norm, cls", [("instance", nn.InstanceNorm2d), ("batch_instance", BatchInstanceNorm2d)])
def test_generator_norm_from_config(norm, cls):
    G = build_generator(GeneratorConfig(conv_dim=8, repeat_num=1, norm=norm), 3)
    norms = [m for m in G.modules() if isinstance(m, cls)]
    assert len(norms) == 1 + 2 + 2 * 1 + 2  # stem, 2 down, 2 per residual block, 2 up
    assert all(conv.bias is None for conv in G.modules() if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)))


def test_generator_without_norm_uses_biases():
    G = build_generator(GeneratorConfig(conv_dim=8, repeat_num=1, norm="none"), 3)
    assert G.main[0].bias is not None


def test_instance_norm_options_reach_the_layers():
    G = build_generator(GeneratorConfig(conv_dim=8, repeat_num=1, norm_options={"track_running_stats": True}), 3)
    assert all(m.track_running_stats for m in G.modules() if isinstance(m, nn.InstanceNorm2d))


def test_discriminator_heads_and_patch_map():
    D = build_discriminator(DiscriminatorConfig(conv_dim=8, repeat_num=3), image_size=32, num_domains=5)
    src, cls = D(torch.randn(2, 3, 32, 32))
    assert src.shape == (2, 1, 4, 4)
    assert cls.shape == (2, 5)
    assert all(isinstance(D.main[i], nn.LeakyReLU) and D.main[i].negative_slope == 0.01 for i in (1, 3, 5))


def test_spectral_norm_on_every_conv_when_enabled():
    D = build_discriminator(DiscriminatorConfig(conv_dim=8, repeat_num=3), 32, 5)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5 and all(has_spectral_norm(m) for m in convs)
    assert [name for name, _ in spectral_norm_modules(D)] == ["main.conv1", "main.conv2", "main.conv3", "src", "cls"]
    off = build_discriminator(
        DiscriminatorConfig(conv_dim=8, repeat_num=3, spectral_norm=SpectralNormConfig(enabled=False)), 32, 5
    )
    assert not any(has_spectral_norm(m) for m in off.modules())


def test_discriminator_rejects_indivisible_size():
    with pytest.raises(ValueError, match="divisible"):
        Discriminator(36, 3, 8, 3)


def test_evaluating_restores_every_submodules_own_mode():
    """gan.models.modes.evaluating: eval + no_grad inside; afterwards each submodule's own mode, also after an
    exception (the old version restored only the top module's mode, flattening a mixed-mode model)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model.train()
    model[1].eval()  # e.g. a frozen norm layer inside a training network
    before = [m.training for m in model.modules()]
    with evaluating(model):
        assert not any(m.training for m in model.modules())
        assert not torch.is_grad_enabled()
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError), evaluating(model, None):
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
    with evaluating(model, grad=True):
        assert torch.is_grad_enabled() and not model.training
