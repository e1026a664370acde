"""Comparing two trainings that should agree to float rounding (other process counts, compiled forwards)."""

from typing import Any

import torch

from gan.build import build_discriminator, build_generator, config_of_state, param_groups


def _optimizer_positions(state: dict[str, Any]) -> dict[str, dict[str, int]]:
    """For G and D: state-dict key of each parameter -> its index in the optimizer's state (the groups' order)."""
    cfg, domains = config_of_state(state, "checkpoint"), len(state["domains"])
    nets = {
        "G": build_generator(cfg.model.generator, domains),
        "D": build_discriminator(cfg.model.discriminator, cfg.data.image_size, domains),
    }
    positions = {}
    for net, model in nets.items():
        names = {id(p): name for name, p in model.named_parameters()}
        order = [p for group in param_groups(model, 1.0, 1.0) for p in group["params"]]
        positions[net] = {names[id(p)]: i for i, p in enumerate(order)}
    return positions


def assert_trained_alike(a: dict[str, Any], b: dict[str, Any]) -> None:
    """G and D equal to float tolerance. Adam turns rounding noise into full-size steps where a gradient is at the
    scale of its eps (1e-8): such elements (second moment < 1e-14) may differ by a few learning rates."""
    assert a["step"] == b["step"]
    positions = _optimizer_positions(a)
    for net in ("G", "D", "G_ema"):
        if a[net] is None:
            continue
        for key in a[net]:
            x, y = a[net][key], b[net][key]
            if not x.is_floating_point():
                assert torch.equal(x, y), f"{net}.{key}"
                continue
            close = torch.isclose(x, y, rtol=1e-4, atol=1e-6)
            index = positions.get(net, {}).get(key)  # None for buffers and for G_ema
            state = a[f"opt_{net}"]["state"].get(index) if index is not None else None
            if state is not None and not close.all():
                close |= state["exp_avg_sq"] < 1e-14
            assert close.all(), f"{net}.{key}: max diff {(x - y).abs().max():.3g}"
    for name in ("opt_G", "opt_D"):  # Adam's first moments: the averaged gradients themselves
        for index, state in a[name]["state"].items():
            expected = b[name]["state"][index]["exp_avg"]
            scale = float(expected.abs().max())
            torch.testing.assert_close(state["exp_avg"], expected, rtol=1e-3, atol=1e-5 * scale + 1e-9)
