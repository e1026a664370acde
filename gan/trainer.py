"""The training loop: StarGAN's alternating D and G steps, with hooks fired after each step.

The trainer knows nothing of TensorBoard or files: hooks read its state and write through the writer. Step results
stay as detached tensors (no ``.item()`` on the hot path); hooks convert them at their own intervals.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import re
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from gan import distributed
from gan.data import DataBundle
from gan.errors import storage_problem
from gan.interrupt import StopRequested, stop_requested
from gan.losses import ADVERSARIAL_LOSSES, classification_loss, gradient_penalty, r1_penalty, reconstruction_loss
from gan.norms import clamp_gates_, set_norm_step
from gan.spectral import cached_weights, get_power_iteration_mode, power_iteration_, spectral_norm_modules

log = logging.getLogger(__name__)

# train.precision -> the autocast dtype of G's and D's forwards (None: plain float32).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Hook(Protocol):
    """What the trainer calls (gan.hooks.Hook is the base class with no-op defaults)."""

    every: int

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def after_step(self, trainer: Trainer) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class DivergedError(RuntimeError):
    """Training diverged (see :meth:`Trainer.declare_divergence`); it stopped and the last good checkpoint is kept."""


class NonFiniteLossError(DivergedError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""


class PeerFailedError(RuntimeError):
    """Another process of a multi-process run failed; this one stops with it (rank 0 says why)."""


# What the ranks agree on after each step's hooks (the largest code wins).
_GO, _STOP, _FAILED = 0, 1, 2


class StepBatchSampler(Sampler[list]):
    """Batches as a pure function of (seed, step, rank, world size): a resumed run sees exactly the batches it would
    have seen, whatever the number of processes before and after.

    Each epoch is a fresh permutation seeded by (seed, epoch); the last partial batch of an epoch is dropped. With
    ``flip`` every item comes as ``(index, mirror)``, the horizontal flips drawn from (seed, step) too, so they do
    not depend on the global RNG of the process (or of a DataLoader worker) that loads the images. ``batch_size``
    is the global batch: with ``world`` processes, rank r takes the r-th of ``world`` equal, contiguous parts of it,
    flips included, so the union over ranks is exactly the single-process batch.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        start_step: int,
        total_steps: int,
        flip: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.n, self.batch, self.seed, self.start, self.total = num_items, batch_size, seed, start_step, total_steps
        self.per_epoch = max(1, num_items // batch_size)
        self.flip, self.rank, self.world = flip, rank, world

    def keys_at(self, step: int) -> list:
        """This rank's dataset keys of ``step``'s batch: indices, or (index, mirror) pairs with ``flip``."""
        keys: list = self.batch_at(step)
        if self.flip:
            g = torch.Generator().manual_seed((self.seed * 1_000_000_007 + step) % 2**63)
            mirror = (torch.rand(len(keys), generator=g) < 0.5).tolist()
            keys = list(zip(keys, mirror))
        return distributed.shard(keys, self.rank, self.world)

    def batch_at(self, step: int) -> list[int]:
        epoch, j = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)
        if self.n < self.batch:  # tiny datasets: repeat the permutation to fill a batch
            perm = perm.repeat(self.batch // self.n + 1)
        return perm[j * self.batch : (j + 1) * self.batch].tolist()

    def __iter__(self) -> Iterator[list]:
        for step in range(self.start, self.total):
            yield self.keys_at(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)


@dataclass
class StepResult:
    """Detached losses of the latest D and G steps (tensors; converted to numbers only when logged)."""

    d: dict[str, torch.Tensor] = field(default_factory=dict)
    g: dict[str, torch.Tensor] = field(default_factory=dict)
    critic_gap: torch.Tensor | None = None  # mean D(real) - mean D(fake) of the latest D step (adversarial outputs)


@dataclass(frozen=True)
class TrainSettings:
    """What the loop needs to know, as plain values (``gan.build`` fills it from the config's train/loss keys)."""

    steps: int
    batch_size: int
    seed: int = 0
    n_critic: int = 5
    lr_decay_steps: int = 0
    g_ema_decay: float = 0.0
    adversarial: str = "wgan"
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0
    lambda_r1: float = 0.0
    sn_per_step: bool = True  # advance D's spectral-norm power iteration once per D step (manual mode)
    num_workers: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of G's and D's forwards (fp16 with gradient scaling)
    channels_last: bool = False  # images in channels-last memory format (the models are converted by gan.build)
    compile: bool = False  # torch.compile G's and D's training forwards (the penalties' double backward stays eager)
    consistency_every: int = 0  # with several processes: check every N steps that all ranks hold identical weights


class Trainer:
    """Trains a generator and a discriminator, built by ``gan.build``, on a DataBundle with StarGAN's steps.

    ``metadata`` (the resolved config, for one) is stored in every ``state_dict()`` as it is.
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        opt_G: torch.optim.Optimizer,
        opt_D: torch.optim.Optimizer,
        data: DataBundle,
        device: torch.device,
        settings: TrainSettings,
        hooks: Sequence[Hook] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.G, self.D, self.opt_G, self.opt_D = G, D, opt_G, opt_D
        self.data, self.device, self.settings = data, device, settings
        self.rank, self.world = distributed.rank(), distributed.world_size()
        distributed.check_batch(settings.batch_size, self.world)
        # The callables of the training forwards: G and D themselves, in DDP with several processes (it all-reduces
        # the gradients), compiled with train.compile. Hooks and the gradient penalties use G and D directly.
        self.G_train = self._training_forward(G)
        self.D_train = self._training_forward(D)
        # D on reals and fakes as one batch (fewer, larger convolutions; about 15 % off those two passes on a
        # 2-core CPU) where that is exact: no layer of D mixes samples and no forward advances spectral norm.
        self.merge_critic = _samples_independent(D)
        self.space = data.space
        self.hooks = list(hooks)
        self.metadata = dict(metadata or {})
        self.num_domains = len(data.domains)
        self.G_ema = self._make_ema()
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, self._lr_factor)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, self._lr_factor)
        self.adv = ADVERSARIAL_LOSSES.get(settings.adversarial)
        if settings.precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision: {settings.precision!r} is not one of {', '.join(AUTOCAST_DTYPES)}")
        self.autocast_dtype = AUTOCAST_DTYPES[settings.precision]
        # fp16 gradients are scaled (one scaler per optimizer: D and G step at different rates); disabled scalers
        # are pass-throughs, so fp32 and bf16 steps are exactly the plain ones.
        fp16 = settings.precision == "fp16"
        self.scaler_D = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_G = torch.amp.GradScaler(device.type, enabled=fp16)
        self.step = 0
        self.last = StepResult()
        # Accumulates "some loss was non-finite" on the device, so the NaN guard needs no per-step sync.
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        # The largest |critic gap| since the NaN guard last looked (on the device too; the guard resets it).
        self.max_gap = torch.zeros((), device=device)
        self.divergence: dict[str, Any] | None = None  # {"step", "reason"} once a divergence signal fired
        self.completed = False  # set when fit() ends: True if it ran to settings.steps without a stop or an error
        self.torn = False  # set when an exception interrupted a step half-way: that state must never be saved
        self.hook_seconds = 0.0  # wall time spent in hook phases so far (evaluations, checkpoints)
        self._phase_started: float | None = None
        self.failing = False  # set while an exception propagates out of fit() (the hooks' end-of-run work sees it)
        self.stopped_by_divergence = False  # set when that exception is a DivergedError: this state is not kept

    # ------------------------------------------------------------------------------------------------- set-up
    def _training_forward(self, net: nn.Module) -> nn.Module:
        wrapped = distributed.wrap(net, self.device, broadcast_buffers=_per_rank_statistics(net))
        return torch.compile(wrapped) if self.settings.compile else wrapped

    def _make_ema(self) -> nn.Module | None:
        if self.settings.g_ema_decay <= 0:
            return None
        ema = copy.deepcopy(self.G).eval()
        ema.requires_grad_(False)
        return ema

    def _lr_factor(self, step: int) -> float:
        """Linear decay to zero over the last ``lr_decay_steps`` steps (StarGAN's schedule, applied every step)."""
        return lr_factor(step, self.settings.steps, self.settings.lr_decay_steps)

    def make_loader(self) -> DataLoader:
        """A loader whose batches (and flips) depend only on (seed, step), starting at the current step."""
        s = self.settings
        flip = bool(getattr(self.data.train, "flip", False))
        sampler = StepBatchSampler(
            len(self.data.train), s.batch_size, s.seed, self.step, s.steps, flip=flip, rank=self.rank, world=self.world
        )
        return DataLoader(
            self.data.train,
            batch_sampler=sampler,
            num_workers=s.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # Its own generator: creating the iterator must not draw from the global RNG (exact resume).
            generator=torch.Generator().manual_seed(s.seed + self.step),
            worker_init_fn=_ignore_stop_signals if s.num_workers else None,
        )

    # ------------------------------------------------------------------------------------------------- labels
    def domain_vector(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels as the float vectors G takes (gan.labels: one-hot, or the 0/1 attribute vector)."""
        return self.space.vectors(labels)

    def step_draws(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's random draws for this rank's part of the batch: StarGAN's target labels (the global batch's
        own labels in a random order, gan.labels.LabelSpace.shuffled) and the gradient penalty's interpolation
        factors. Both are drawn for the whole global batch from a generator seeded by (seed, step) and then
        sharded like the images, so they depend neither on the process's RNG state nor on the number of processes:
        N processes draw exactly what one process with the same global batch draws."""
        everyone = distributed.gather(labels)  # the global batch's labels, in rank order as the sampler split them
        g = torch.Generator().manual_seed((self.settings.seed * 998_244_353 + self.step * 7_919 + 1) % 2**63)
        targets = self.space.shuffled(everyone, generator=g)
        alpha = torch.rand(everyone.size(0), generator=g)
        part = slice(self.rank * labels.size(0), (self.rank + 1) * labels.size(0))
        return targets[part], alpha[part].to(self.device)

    # -------------------------------------------------------------------------------------------------- steps
    def _amp(self) -> contextlib.AbstractContextManager[object]:
        """Autocast for ``train.precision`` bf16/fp16 (nothing for fp32). Spectral norm's power iteration and sigma
        switch it off for themselves (gan.spectral), so they stay float32 under every precision."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def critic(self, x: torch.Tensor, eager: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """D's (adversarial map, domain logits) under the run's precision, as float32 for the losses. ``eager``: D
        itself, neither compiled nor in DDP, for outputs that a penalty differentiates twice (torch.compile has no
        double backward; DDP's reducer only needs one forward of the step to go through it)."""
        with self._amp():
            out, cls = (self.D if eager else self.D_train)(x)
        return out.float(), cls.float()

    def generate(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """G(x, labels) under the run's precision, as float32."""
        with self._amp():
            return self.G_train(x, self.domain_vector(labels)).float()

    def _penalty_scale(self, scaler: torch.amp.GradScaler) -> float | None:
        return scaler.get_scale() if scaler.is_enabled() else None

    def d_step(
        self, x_real: torch.Tensor, label_org: torch.Tensor, label_trg: torch.Tensor, alpha: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """One critic update: adversarial + domain classification on reals + optional GP (interpolation factors
        ``alpha``, drawn at random when None) and R1."""
        if self.settings.sn_per_step:
            power_iteration_(self.D)  # once per optimizer step; the forwards below all divide by the same sigma
        # One W / sigma per SN layer for the step's forwards (real, fake, penalty) and one backward through it.
        with cached_weights(self.D):
            parts, total, watched, gap = self.d_losses(x_real, label_org, label_trg, alpha)
            self.opt_D.zero_grad(set_to_none=True)
            self.scaler_D.scale(total).backward()
        self.scaler_D.step(self.opt_D)  # a plain opt_D.step() unless fp16 (which skips steps with inf gradients)
        self.scaler_D.update()
        clamp_gates_(self.D)  # Batch-Instance gates stay in [0, 1] (Nam & Kim), in D as in G
        values = self._detached({**parts, "gap": gap}, watched)
        self.last.critic_gap = gap = values.pop("gap")
        self.max_gap = torch.maximum(self.max_gap, gap.abs())
        return values

    def d_losses(
        self, x_real: torch.Tensor, label_org: torch.Tensor, label_trg: torch.Tensor, alpha: torch.Tensor | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """The critic's loss terms, their weighted total, the total the NaN guard watches, and the critic gap."""
        s = self.settings
        use_r1 = s.lambda_r1 > 0
        x_in = x_real.detach().requires_grad_(use_r1)
        with torch.no_grad():
            x_fake = self.generate(x_real, label_trg)
        if self.merge_critic and not use_r1:
            out, cls = self.critic(torch.cat([x_real, x_fake]))
            (out_real, out_fake), cls_real = out.chunk(2), cls[: x_real.size(0)]
        else:
            out_real, cls_real = self.critic(x_in, eager=use_r1)  # R1 differentiates this output twice
            out_fake, _ = self.critic(x_fake)
        gap = (out_real.detach().mean() - out_fake.detach().mean()).float()
        parts = {
            "adv": self.adv.d(out_real, out_fake),
            "cls": classification_loss(cls_real, label_org, self.data.multi_label),
        }
        total = parts["adv"] + s.lambda_cls * parts["cls"]
        watched = total  # fp16: an overflow inside a penalty's scaled gradient is the scaler's to skip, not a NaN
        scale = self._penalty_scale(self.scaler_D)
        if s.lambda_gp > 0:
            parts["gp"] = gradient_penalty(lambda x: self.critic(x, eager=True)[0], x_real, x_fake, scale, alpha)
            total = total + s.lambda_gp * parts["gp"]
        if use_r1:
            parts["r1"] = r1_penalty(out_real, x_in, scale)
            total = total + s.lambda_r1 * parts["r1"]
        return parts, total, (total if scale is None else watched), gap

    def g_step(self, x_real: torch.Tensor, label_org: torch.Tensor, label_trg: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generator update: fool D, land in the target domain, and reconstruct the input from the fake."""
        s = self.settings
        x_fake = self.generate(x_real, label_trg)
        with _frozen(self.D):  # only x_fake's gradient is needed: D's own weight gradients would be thrown away
            out_fake, cls_fake = self.critic(x_fake, eager=True)
        x_rec = self.generate(x_fake, label_org)
        parts = {
            "adv": self.adv.g(out_fake),
            "cls": classification_loss(cls_fake, label_trg, self.data.multi_label),
            "rec": reconstruction_loss(x_real, x_rec),
        }
        total = parts["adv"] + s.lambda_cls * parts["cls"] + s.lambda_rec * parts["rec"]
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler_G.scale(total).backward()
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        clamp_gates_(self.G)
        self._update_ema()
        return self._detached(parts, total)

    def _detached(self, parts: dict[str, torch.Tensor], total: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step's values, detached, and with several processes averaged over the ranks (one collective), so
        that every rank logs and guards the same numbers; the non-finite flag follows the (averaged) total."""
        values = distributed.average({**{key: value.detach() for key, value in parts.items()}, " total": total})
        self.nonfinite |= ~torch.isfinite(values.pop(" total").detach())
        return values

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        decay = self.settings.g_ema_decay
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def sample_generator(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when enabled."""
        return self.G_ema if self.G_ema is not None else self.G

    def declare_divergence(self, reason: str, stop: bool) -> None:
        """Record that training diverged (the first signal wins: its step and reason go into the checkpoint and the
        run's status). With ``stop`` raise DivergedError: the run ends, no checkpoint of this state is written."""
        if self.divergence is None:
            self.divergence = {"step": self.step, "reason": reason}
            log.warning("diverged at step %d: %s", self.step, reason)
        if stop:
            raise DivergedError(
                f"diverged at step {self.divergence['step']}: {self.divergence['reason']}; training stopped, the last "
                "good checkpoint was kept"
            )

    # ---------------------------------------------------------------------------------------------------- fit
    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """One iteration: a D step, and every ``n_critic`` iterations a G step (as StarGAN counts them)."""
        x_real = batch[0].to(self.device, non_blocking=True)
        if self.settings.channels_last:
            x_real = x_real.contiguous(memory_format=torch.channels_last)
        label_org = batch[1].to(self.device, non_blocking=True)
        label_trg, alpha = self.step_draws(label_org)
        for net in (self.G, self.D):
            set_norm_step(net, self.step)  # Batch Renorm's clipping schedule follows the training step
        self.last.d = self.d_step(x_real, label_org, label_trg, alpha)
        if (self.step + 1) % self.settings.n_critic == 0:
            self.last.g = self.g_step(x_real, label_org, label_trg)
        with warnings.catch_warnings():
            # G's optimizer first steps at iteration n_critic, and fp16's scaler skips steps with inf gradients; the
            # schedule is per iteration on purpose.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.sched_G.step()
            self.sched_D.step()
        self.step += 1

    def fit(self) -> None:
        """Train until ``settings.steps`` or a stop request, firing hooks after every step.

        A stop request (gan.interrupt's flag, which long hook work also honours by raising StopRequested) ends the
        run after the current step; an exception inside a step marks the state ``torn``
        so that no checkpoint of it is written. Every hook's ``on_fit_end`` runs, even when an earlier one fails.
        """
        self.G.train()
        self.D.train()
        completed, in_step = False, False
        try:
            stopped = self._hook_phase(lambda: [hook.on_fit_start(self) for hook in self.hooks])
            if not stopped:
                for batch in self.make_loader():
                    in_step = True
                    self.train_step(batch)
                    in_step = False
                    self._check_consistency()
                    if self._hook_phase(self._after_step_hooks):
                        log.info("stop requested at step %d", self.step)
                        stopped = True
                        break
                self._check_consistency(force=True)
            completed = not stopped
        except BaseException as exc:
            self.torn, self.failing = in_step, True
            self.stopped_by_divergence = isinstance(exc, DivergedError)
            raise
        finally:
            # Hooks may skip slow end-of-run work (final evaluations) when the run was stopped or failed, so that
            # the checkpoint hook saves promptly.
            self.completed = completed
            self._end_hooks()

    def training_clock(self) -> float:
        """A clock (seconds) that runs while the trainer trains and stands still while hooks run (evaluations,
        checkpoints): the progress bar's rate and ETA are measured with it."""
        now = time.perf_counter() if self._phase_started is None else self._phase_started
        return now - self.hook_seconds

    def _after_step_hooks(self) -> None:
        for hook in self.hooks:
            if hook.every and self.step % hook.every == 0:
                hook.after_step(self)

    def _hook_phase(self, work: Callable[[], object]) -> bool:
        """Run hook work (only rank 0 has hooks), then agree with every rank whether to stop; returns True to stop.

        A stop request (a signal, or StopRequested raised by long hook work) stops every rank after this step. An
        exception raised by a hook is re-raised here after the others have been told, so that they stop too
        (raising PeerFailedError) instead of waiting for rank 0 in the next collective.
        """
        failure: BaseException | None = None
        code = _GO
        started = self._phase_started = time.perf_counter()
        try:
            work()
        except StopRequested:
            log.info("stop requested at step %d (during a hook)", self.step)
            code = _STOP
        except BaseException as exc:
            failure, code = exc, _FAILED
        self.hook_seconds += time.perf_counter() - started
        self._phase_started = None
        if code == _GO and stop_requested():
            code = _STOP
        code = distributed.agree(code, self.device)
        if failure is not None:
            raise failure
        if code == _FAILED:
            raise PeerFailedError(f"rank {self.rank}: another process failed at step {self.step} (see rank 0)")
        return code == _STOP

    def _check_consistency(self, force: bool = False) -> None:
        """With several processes: every ``consistency_every`` steps (and at the end) check that every rank holds
        bitwise the same G, D (SN's u, v included) and EMA G, as the checkpoints written by rank 0 assume."""
        every = self.settings.consistency_every
        if self.world > 1 and (force or (every and self.step % every == 0)):
            nets = {"G": self.G, "D": self.D, **({"G_ema": self.G_ema} if self.G_ema is not None else {})}
            distributed.check_consistency(nets)

    def _end_hooks(self) -> None:
        """Every hook's on_fit_end. Hooks that keep the run (``saves_run``: checkpoints) go first, so that a final
        evaluation can never delay or prevent the last checkpoint, and once more after the others
        (``after_fit_end``: the evaluations' results join the saved hook state). The first failure is raised after
        all of them ran, unless the run is already failing: then the original error is the one the caller sees."""
        savers = [h for h in self.hooks if getattr(h, "saves_run", False)]
        ordered = savers + [h for h in self.hooks if h not in savers]
        calls = [(h, h.on_fit_end) for h in ordered] + [(h, h.after_fit_end) for h in savers]
        failure: BaseException | None = None
        for hook, call in calls:
            try:
                call(self)
            except StopRequested:
                log.info("stop requested during %s's end-of-run work", type(hook).__name__)
            except Exception as exc:
                name, storage = type(hook).__name__, storage_problem(exc)
                if storage is not None:  # a full disk: one line (in train.log); the caller reports the error
                    log.info("%s's end-of-run work failed: %s", name, storage)
                elif self.failing:
                    log.exception("%s's end-of-run work failed too", name)
                else:
                    log.exception("%s's end-of-run work failed", name)
                if not self.failing:
                    failure = failure or exc
        if failure is not None:
            raise failure

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (see DESIGN.md, Checkpoints)."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            **self.metadata,
            "step": self.step,
            "domains": list(self.data.domains),
            "multi_label": self.data.multi_label,
            "num_train": len(self.data.train),  # a resume that finds another training set size warns
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "rng": rng,
            "scalers": {"D": self.scaler_D.state_dict(), "G": self.scaler_G.state_dict()},  # {} when not fp16
            "divergence": self.divergence,
            "hooks": self.hook_states(),
        }

    def hook_states(self) -> dict[str, Any]:
        """Every hook's state_dict by class name (what checkpoints keep)."""
        return {type(h).__name__: h.state_dict() for h in self.hooks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the caller has checked that the model config matches. Hook states are
        restored for the hooks attached now (see :meth:`load_hook_states` for hooks attached later)."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else state["G"])
        for name, opt, sched, net in (("G", self.opt_G, self.sched_G, self.G), ("D", self.opt_D, self.sched_D, self.D)):
            _load_optimizer(opt, sched, net, state[f"opt_{name}"], state[f"sched_{name}"], name)
        self.step = int(state["step"])
        scalers = state.get("scalers") or {}
        for name, scaler in (("D", self.scaler_D), ("G", self.scaler_G)):
            if scaler.is_enabled() and scalers.get(name):  # a run switched to fp16 on resume starts a fresh scale
                scaler.load_state_dict(scalers[name])
        self.divergence = state.get("divergence")
        torch.set_rng_state(state["rng"]["torch"])
        version, internal, gauss = state["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.load_hook_states(state.get("hooks", {}))

    def load_hook_states(self, states: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.load_state_dict(states.get(type(hook).__name__, {}))


def _load_optimizer(
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    model: nn.Module,
    opt_state: dict[str, Any],
    sched_state: dict[str, Any],
    name: str,
) -> None:
    """Load an optimizer and its schedule. A checkpoint of an older version whose optimizer had one parameter group
    where this one has several (Batch-Instance gates in D got their own group) is mapped parameter by parameter:
    Adam's moments carry over, the groups take this run's learning rates at the saved step."""
    groups = opt_state.get("param_groups", [])
    if len(groups) == len(opt.param_groups) or len(groups) != 1:
        opt.load_state_dict(opt_state)
        sched.load_state_dict(sched_state)
        return
    position = {id(p): i for i, p in enumerate(model.parameters())}  # the old single group's order
    flat = [p for group in opt.param_groups for p in group["params"]]
    new_index = {position[id(p)]: i for i, p in enumerate(flat)}
    fresh = opt.state_dict()
    fresh["state"] = {new_index[int(i)]: value for i, value in opt_state["state"].items()}
    opt.load_state_dict(fresh)
    sched.last_epoch = int(sched_state["last_epoch"])
    for group, base, fn in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * fn(sched.last_epoch)
    sched._last_lr = [group["lr"] for group in opt.param_groups]
    log.warning(
        "opt_%s of the checkpoint has one parameter group, this run has %d (Batch-Instance gates get their own); "
        "Adam's state was mapped per parameter",
        name,
        len(opt.param_groups),
    )


@contextlib.contextmanager
def _frozen(net: nn.Module) -> Iterator[None]:
    """``net``'s parameters stop requiring gradients for the duration (input gradients still flow through it)."""
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags):
            p.requires_grad_(flag)


def _samples_independent(D: nn.Module) -> bool:
    """Whether D's output for one image is independent of the rest of its batch and of how many forwards ran: no
    batch-statistics layer, and no spectral norm that iterates in every forward (update: forward)."""
    mixing = any(hasattr(m, "sync_stats") or isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    iterating = any(get_power_iteration_mode(m) == "forward" for _, m in spectral_norm_modules(D))
    return not mixing and not iterating


def _per_rank_statistics(net: nn.Module) -> bool:
    """Whether ``net`` keeps batch statistics per process (batch-statistics norms without model.sync_batchnorm):
    DDP must then broadcast rank 0's buffers so that every rank holds the same running statistics."""
    return any(getattr(m, "sync_stats", None) is False for m in net.modules())


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C / SIGTERM to the main process, which stops the run cleanly (whatever the
    start method: forked workers would inherit the main handler, spawned ones the default)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def lr_factor(step: int, total: int, decay: int) -> float:
    """StarGAN's schedule: 1 until ``total - decay``, then linear to 0 at ``total``."""
    start = total - decay
    if decay <= 0 or step < start:
        return 1.0
    return max(0.0, (total - step) / decay)
