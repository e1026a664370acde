"""The training loop: StarGAN's alternating D and G steps, with hooks fired after each step.

The trainer knows nothing of TensorBoard or files: hooks read its state and write through the writer. Step results
stay as detached tensors (no ``.item()`` on the hot path); hooks convert them at their own intervals.
"""

from __future__ import annotations

import copy
import logging
import random
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from gan.config import Config, config_to_dict
from gan.data import DataBundle
from gan.losses import ADVERSARIAL_LOSSES, classification_loss, gradient_penalty, r1_penalty, reconstruction_loss
from gan.models import build_discriminator, build_generator
from gan.norms import clamp_gates_, gate_parameters, set_norm_step, set_sync_batch_stats, uses_batch_statistics
from gan.spectral import power_iteration_, set_power_iteration_mode

if TYPE_CHECKING:
    from gan.hooks import Hook

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""


class StepBatchSampler(Sampler[list[int]]):
    """Batches as a pure function of (seed, step): a resumed run sees exactly the batches it would have seen.

    Each epoch is a fresh permutation seeded by (seed, epoch); the last partial batch of an epoch is dropped.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, total_steps: int) -> None:
        self.n, self.batch, self.seed, self.start, self.total = num_items, batch_size, seed, start_step, total_steps
        self.per_epoch = max(1, num_items // batch_size)

    def batch_at(self, step: int) -> list[int]:
        epoch, j = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)
        if self.n < self.batch:  # tiny datasets: repeat the permutation to fill a batch
            perm = perm.repeat(self.batch // self.n + 1)
        return perm[j * self.batch : (j + 1) * self.batch].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.total):
            yield self.batch_at(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)


@dataclass
class StepResult:
    """Detached losses of the latest D and G steps (tensors; converted to numbers only when logged)."""

    d: dict[str, torch.Tensor] = field(default_factory=dict)
    g: dict[str, torch.Tensor] = field(default_factory=dict)


class Trainer:
    """Builds G, D, optimizers and schedulers from a Config and trains them on a DataBundle."""

    def __init__(self, cfg: Config, data: DataBundle, device: torch.device, hooks: list[Hook] | None = None) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        self.hooks = list(hooks or [])
        self.num_domains = len(data.domains)
        torch.manual_seed(cfg.train.seed)
        random.seed(cfg.train.seed)
        self.G = build_generator(cfg.model.generator, self.num_domains).to(device)
        self.D = build_discriminator(cfg.model.discriminator, cfg.data.image_size, self.num_domains).to(device)
        self.sn_per_step = cfg.model.discriminator.spectral_norm.update == "step"
        if self.sn_per_step:
            set_power_iteration_mode(self.D, "manual")
        if cfg.model.sync_batchnorm:
            for net in (self.G, self.D):
                set_sync_batch_stats(net, True)
        self._warn_about_batch_statistics_in_d()
        self.G_ema = self._make_ema()
        self.opt_G = torch.optim.Adam(self._g_param_groups(), betas=(cfg.train.beta1, cfg.train.beta2))
        self.opt_D = torch.optim.Adam(self.D.parameters(), cfg.train.d_lr, betas=(cfg.train.beta1, cfg.train.beta2))
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, self._lr_factor)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, self._lr_factor)
        self.adv = ADVERSARIAL_LOSSES.get(cfg.loss.adversarial)
        self.step = 0
        self.last = StepResult()
        # Accumulates "some loss was non-finite" on the device, so the NaN guard needs no per-step sync.
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.stop_requested = False
        self.completed = False  # set when fit() ends: True if it ran to train.steps without a stop or an error

    # ------------------------------------------------------------------------------------------------- set-up
    def _make_ema(self) -> nn.Module | None:
        if self.cfg.train.g_ema_decay <= 0:
            return None
        ema = copy.deepcopy(self.G).eval()
        ema.requires_grad_(False)
        return ema

    def _warn_about_batch_statistics_in_d(self) -> None:
        d_norm, loss = self.cfg.model.discriminator.norm, self.cfg.loss
        if uses_batch_statistics(d_norm) and (loss.lambda_gp > 0 or loss.lambda_r1 > 0):
            log.warning(
                "model.discriminator.norm=%s normalises with batch statistics: D's output for one image depends on "
                "the others in its batch, so the per-sample gradient penalty (loss.lambda_gp / loss.lambda_r1) is "
                "ill-defined; prefer layer, instance, group or none in D",
                d_norm,
            )

    def _g_param_groups(self) -> list[dict[str, Any]]:
        # Batch-Instance gates get their own group: lr times gate_lr_multiplier and no weight decay (Nam & Kim).
        gates = list(gate_parameters(self.G))
        gate_ids = {id(p) for p in gates}
        rest = [p for p in self.G.parameters() if id(p) not in gate_ids]
        groups: list[dict[str, Any]] = [{"params": rest, "lr": self.cfg.train.g_lr}]
        if gates:
            lr = self.cfg.train.g_lr * self.cfg.train.gate_lr_multiplier
            groups.append({"params": gates, "lr": lr, "weight_decay": 0.0})
        return groups

    def _lr_factor(self, step: int) -> float:
        """Linear decay to zero over the last ``lr_decay_steps`` steps (StarGAN's schedule, applied every step)."""
        total, decay = self.cfg.train.steps, self.cfg.train.lr_decay_steps
        start = total - decay
        if decay <= 0 or step < start:
            return 1.0
        return max(0.0, (total - step) / decay)

    def make_loader(self) -> DataLoader:
        """A loader whose batches depend only on (seed, step), starting at the current step."""
        sampler = StepBatchSampler(
            len(self.data.train), self.cfg.train.batch_size, self.cfg.train.seed, self.step, self.cfg.train.steps
        )
        workers = self.cfg.data.num_workers
        return DataLoader(
            self.data.train,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # Its own generator: creating the iterator must not draw from the global RNG (exact resume).
            generator=torch.Generator().manual_seed(self.cfg.train.seed + self.step),
        )

    # ------------------------------------------------------------------------------------------------- labels
    def domain_vector(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels as the float vectors G takes: one-hot for single-label data, 0/1 for multi-label."""
        if self.data.multi_label:
            return labels.float()
        return nn.functional.one_hot(labels, self.num_domains).float()

    def random_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """StarGAN's target labels: the batch's own labels in a random order."""
        return labels[torch.randperm(labels.size(0), device=labels.device)]

    # -------------------------------------------------------------------------------------------------- steps
    def d_step(self, x_real: torch.Tensor, label_org: torch.Tensor, label_trg: torch.Tensor) -> dict[str, torch.Tensor]:
        """One critic update: adversarial + domain classification on reals + optional GP and R1."""
        cfg = self.cfg.loss
        if self.sn_per_step:
            power_iteration_(self.D)  # once per optimizer step; the forwards below all divide by the same sigma
        use_r1 = cfg.lambda_r1 > 0
        x_in = x_real.detach().requires_grad_(use_r1)
        out_real, cls_real = self.D(x_in)
        with torch.no_grad():
            x_fake = self.G(x_real, self.domain_vector(label_trg))
        out_fake, _ = self.D(x_fake)
        parts = {
            "adv": self.adv.d(out_real, out_fake),
            "cls": classification_loss(cls_real, label_org, self.data.multi_label),
        }
        total = parts["adv"] + cfg.lambda_cls * parts["cls"]
        if cfg.lambda_gp > 0:
            parts["gp"] = gradient_penalty(lambda x: self.D(x)[0], x_real, x_fake)
            total = total + cfg.lambda_gp * parts["gp"]
        if use_r1:
            parts["r1"] = r1_penalty(out_real, x_in)
            total = total + cfg.lambda_r1 * parts["r1"]
        self.opt_D.zero_grad(set_to_none=True)
        total.backward()
        self.opt_D.step()
        return self._detached(parts, total)

    def g_step(self, x_real: torch.Tensor, label_org: torch.Tensor, label_trg: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generator update: fool D, land in the target domain, and reconstruct the input from the fake."""
        cfg = self.cfg.loss
        x_fake = self.G(x_real, self.domain_vector(label_trg))
        out_fake, cls_fake = self.D(x_fake)
        x_rec = self.G(x_fake, self.domain_vector(label_org))
        parts = {
            "adv": self.adv.g(out_fake),
            "cls": classification_loss(cls_fake, label_trg, self.data.multi_label),
            "rec": reconstruction_loss(x_real, x_rec),
        }
        total = parts["adv"] + cfg.lambda_cls * parts["cls"] + cfg.lambda_rec * parts["rec"]
        self.opt_G.zero_grad(set_to_none=True)
        total.backward()
        self.opt_G.step()
        clamp_gates_(self.G)
        self._update_ema()
        return self._detached(parts, total)

    def _detached(self, parts: dict[str, torch.Tensor], total: torch.Tensor) -> dict[str, torch.Tensor]:
        self.nonfinite |= ~torch.isfinite(total.detach())
        return {key: value.detach() for key, value in parts.items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        decay = self.cfg.train.g_ema_decay
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def sample_generator(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when enabled."""
        return self.G_ema if self.G_ema is not None else self.G

    # ---------------------------------------------------------------------------------------------------- fit
    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """One iteration: a D step, and every ``n_critic`` iterations a G step (as StarGAN counts them)."""
        x_real = batch[0].to(self.device, non_blocking=True)
        label_org = batch[1].to(self.device, non_blocking=True)
        label_trg = self.random_targets(label_org)
        for net in (self.G, self.D):
            set_norm_step(net, self.step)  # Batch Renorm's clipping schedule follows the training step
        self.last.d = self.d_step(x_real, label_org, label_trg)
        if (self.step + 1) % self.cfg.train.n_critic == 0:
            self.last.g = self.g_step(x_real, label_org, label_trg)
        with warnings.catch_warnings():
            # G's optimizer first steps at iteration n_critic; the schedule is per iteration on purpose.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.sched_G.step()
        self.sched_D.step()
        self.step += 1

    def fit(self) -> None:
        """Train until ``train.steps`` or a stop request, firing hooks after every step."""
        self.G.train()
        self.D.train()
        for hook in self.hooks:
            hook.on_fit_start(self)
        completed = False
        try:
            for batch in self.make_loader():
                self.train_step(batch)
                for hook in self.hooks:
                    if self.step % hook.every == 0:
                        hook.after_step(self)
                if self.stop_requested:
                    log.info("stop requested at step %d", self.step)
                    break
            completed = not self.stop_requested
        finally:
            # Hooks may skip slow end-of-run work (final evaluations) when the run was stopped or failed, so that
            # the checkpoint hook saves promptly.
            self.completed = completed
            for hook in self.hooks:
                hook.on_fit_end(self)

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (see DESIGN.md, Checkpoints)."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "config": config_to_dict(self.cfg),
            "domains": list(self.data.domains),
            "multi_label": self.data.multi_label,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "rng": rng,
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the caller has checked that the model config matches."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else state["G"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        version, internal, gauss = state["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        for hook in self.hooks:
            hook.load_state_dict(state["hooks"].get(type(hook).__name__, {}))
