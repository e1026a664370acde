"""Hooks fired by the trainer every ``every`` steps: scalars, translation grids, sigma estimates, paired L1,
stability signals, checkpoints, the NaN guard and the progress bar. Each hook reads trainer state and writes through
the writer."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from gan.checkpoint import FORMAT, save_checkpoint
from gan.grids import labelled_grid, save_png
from gan.interrupt import check_stop
from gan.lipschitz import LipschitzMonitor, adversarial_output, eval_weight, grad_norms, jacobian_norms
from gan.metrics.evaluation import (
    RealFeatures,
    TranslationScores,
    evaluate_translations,
    paired_scores,
    spread,
    unflipped,
)
from gan.metrics.features import FeatureExtractor
from gan.models.modes import evaluating
from gan.norms import SwitchableNorm2d, gate_parameters
from gan.spectral import reshape_dim, sn_estimate, spectral_norm_modules, work_dtype
from gan.trainer import NonFiniteLossError, Trainer
from gan.writers import RunWriter

log = logging.getLogger(__name__)


class Hook:
    """Base class: no-op callbacks; ``after_step`` runs when the trainer's step is a multiple of ``every``
    (``every: 0`` switches a hook off, its step-0 and final evaluations included)."""

    every: int = 1

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first step (also after a resume)."""

    def after_step(self, trainer: Trainer) -> None:
        """Called after every ``every``-th step; ``trainer.step`` counts completed steps."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called once when training ends, is interrupted, or fails."""

    def after_fit_end(self, trainer: Trainer) -> None:
        """Called after every hook's on_fit_end, for hooks with ``saves_run`` (checkpoints) only."""

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints."""
        return {}

    def summary(self) -> list[str]:
        """Lines for the end-of-run summary on the console."""
        return []

    def status(self) -> dict[str, Any]:
        """Entries for the run's status.json."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output."""


# ------------------------------------------------------------------------------------------------------ scalars
class ScalarsHook(Hook):
    """Losses (``loss/D/*``, ``loss/G/*``), learning rates and ``perf/it_per_s``."""

    def __init__(self, writer: RunWriter, every: int) -> None:
        self.writer, self.every = writer, every
        self._t0: float | None = None
        self._step0 = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.step

    def after_step(self, trainer: Trainer) -> None:
        values: dict[str, Any] = {f"loss/D/{k}": v for k, v in trainer.last.d.items()}
        values.update({f"loss/G/{k}": v for k, v in trainer.last.g.items()})
        values["lr/G"] = trainer.opt_G.param_groups[0]["lr"]
        values["lr/D"] = trainer.opt_D.param_groups[0]["lr"]
        if trainer.last.critic_gap is not None:
            values["stability/critic_gap"] = trainer.last.critic_gap
        now = time.perf_counter()
        if self._t0 is not None and trainer.step > self._step0:
            values["perf/it_per_s"] = (trainer.step - self._step0) / max(now - self._t0, 1e-9)
        self._t0, self._step0 = now, trainer.step
        self.writer.scalars(values, trainer.step)
        self.writer.repeat_sparse(trainer.step)  # the staircase of the sparse tags (RunWriter)


# ------------------------------------------------------------------------------------------------------- images
class ImagesHook(Hook):
    """``images/translations``: rows are fixed held-out inputs (source label at the left); columns the input, then
    each target domain (named on top); tiles enlarged to at least 96 px. The same grid is written to
    ``<run>/images/translations_<step>.png`` and ``translations_last.png`` (atomically)."""

    def __init__(self, writer: RunWriter, every: int, num_images: int) -> None:
        self.writer, self.every, self.num_images = writer, every, num_images
        self.inputs: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        # Evenly spaced over the test set, so that the rows cover every domain.
        if not self.every:
            return
        self.inputs, self.labels = held_out_batch(trainer, self.num_images)
        if trainer.step == 0:
            self.after_step(trainer)

    def after_step(self, trainer: Trainer) -> None:
        G = trainer.sample_generator()
        columns = [self.inputs]
        with evaluating(G):
            for target in trainer.space.grid_targets(self.labels):
                columns.append(G(self.inputs, trainer.domain_vector(target)))
        space = trainer.space
        rows = [row_label(space, label) for label in self.labels]
        grid = labelled_grid(columns, ["input", *space.domains], rows)
        self.writer.image("images/translations", grid, trainer.step)
        folder = self.writer.run_dir / "images"
        save_png(grid, folder / f"translations_{trainer.step:08d}.png")
        save_png(grid, folder / "translations_last.png")


def row_label(space: Any, label: torch.Tensor) -> str:
    """An input's source as the grid shows it: its domain, or for multi-label data its attributes ("none" if
    none is set)."""
    if not space.multi_label:
        return space.domains[int(label)]
    names = [name for name, on in zip(space.domains, label.tolist()) if on]
    return ", ".join(names) or "none"


# -------------------------------------------------------------------------------------------------------- sigma
def sigma_tags(model: nn.Module, network: str = "D") -> dict[str, torch.Tensor]:
    """``sigma/<network>/<layer>/sn_estimate`` for every spectrally normalised layer (free: no power iteration)."""
    out = {}
    for name, module in spectral_norm_modules(model):
        layer = name.removeprefix("main.") or "self"
        out[f"sigma/{network}/{layer}/sn_estimate"] = sn_estimate(module)
    return out


class SigmaHook(Hook):
    """Per-layer sigma estimates of D's spectral normalization (the sigma SN divides by)."""

    def __init__(self, writer: RunWriter, every: int) -> None:
        self.writer, self.every = writer, every

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.every and trainer.step == 0:
            self.after_step(trainer)  # the curves start at the initial weights

    def after_step(self, trainer: Trainer) -> None:
        tags = sigma_tags(trainer.D)
        if tags:
            self.writer.scalars(tags, trainer.step, every=self.every)


# ---------------------------------------------------------------------------------------------------- lipschitz
PER_LAYER = "Per-layer sigma of D: SN's estimate for the raw weight (sn_estimate), operator norm after SN (operator)"


def lipschitz_layout(D: nn.Module, jacobian: bool = True) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard custom-scalars layout. "Lipschitz bounds of D": the certified upper bound, the measured lower
    bounds and their ratio each on a chart of its own (the upper bound is often 10-100x the lower ones, which would
    flatten them on a shared axis). "Per-layer sigma of D": one chart per conv/linear layer, domain head included,
    with SN's sigma estimate of the raw weight and the true operator norm of the layer as the forward uses it
    (Custom Scalars colours the series of one run alike and tells them apart by marker: see README)."""
    layers = [name.removeprefix("main.") for name, m in D.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    per_layer = {
        layer: ["Multiline", [f"sigma/D/{layer}/sn_estimate", f"sigma/D/{layer}/operator"]] for layer in layers
    }
    bounds = {
        "certified upper bound (product of the layers' bounds)": ["Multiline", ["lipschitz/D/upper_bound"]],
        "measured lower bounds: input-gradient norms": ["Multiline", ["lipschitz/D/grad_norm/.*"]],
    }
    if jacobian:
        bounds["measured lower bounds: Jacobian spectral norms"] = ["Multiline", ["lipschitz/D/jacobian_norm/.*"]]
    bounds["looseness: upper bound / largest lower bound"] = ["Multiline", ["lipschitz/D/bound_ratio"]]
    return {"Lipschitz bounds of D": bounds, PER_LAYER: per_layer}


class LipschitzHook(Hook):
    """What spectral normalization really bounds (gan/lipschitz.py): per-layer operator norms next to SN's sigma,
    the product upper bound for D, and lower bounds from input gradients on held-out reals, their translations and
    interpolates. D runs in eval mode and the hook draws from its own random generator, so training state and
    random streams are untouched."""

    def __init__(
        self, writer: RunWriter, every: int, num_images: int, jacobian: bool, image_size: int, seed: int = 0
    ) -> None:
        self.writer, self.every, self.num_images, self.jacobian = writer, every, num_images, jacobian
        self.image_size, self.seed = image_size, seed
        self.monitor = LipschitzMonitor()
        self.generator = torch.Generator()
        self.reals: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.every:
            return
        self.generator.manual_seed(self.seed + 7919 * (trainer.step + 1))
        self.reals, self.labels = held_out_batch(trainer, self.num_images)
        self.writer.custom_scalars(lipschitz_layout(trainer.D, self.jacobian))
        if trainer.step == 0:
            self.after_step(trainer)

    def after_step(self, trainer: Trainer) -> None:
        values = self.monitor.measure(trainer.D, self.image_size)
        G = trainer.sample_generator()
        order = torch.randperm(self.labels.size(0), generator=self.generator).to(self.labels.device)
        with evaluating(G):
            fake = G(self.reals, trainer.domain_vector(self.labels[order]))
        values.update(grad_norms(trainer.D, self.reals, fake, self.generator))
        if self.jacobian:
            values.update(jacobian_norms(trainer.D, self.reals, fake, self.generator))
        lower = max(float(v) for k, v in values.items() if "_norm/" in k)
        values["lipschitz/D/bound_ratio"] = float(values["lipschitz/D/upper_bound"]) / lower if lower > 0 else math.inf
        self.writer.scalars(values, trainer.step, every=self.every, count=self.labels.size(0))


def held_out_batch(trainer: Trainer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` test images evenly spaced over the test set (which is ordered by domain), with their labels."""
    return spread_batch(trainer.data.test, count, trainer.device)


def spread_batch(dataset: Any, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images evenly spaced over ``dataset`` (unflipped: no random draw), with their labels."""
    dataset = unflipped(dataset)
    picks = spread(torch.arange(len(dataset)), count)
    items = [dataset[int(i)] for i in picks]
    images = torch.stack([x for x, _ in items]).to(device)
    labels = torch.stack([torch.as_tensor(y) for _, y in items]).to(device)
    return images, labels


# -------------------------------------------------------------------------------------------------------- norms
def norm_tags(model: nn.Module, network: str) -> dict[str, torch.Tensor]:
    """Learned mixing weights of the norm layers: Switchable Norm's importance weights per layer
    (``norm/<net>/<layer>/switch_weights/{in,ln,bn}`` for the means, ``.../switch_var_weights/...`` for the
    variances) and the mean Batch-Instance gate over the network (``norm/<net>/rho_mean``)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, SwitchableNorm2d):
            weights = module.switch_weights()
            layer = name.removeprefix("main.")
            for kind, key in (("mean", "switch_weights"), ("var", "switch_var_weights")):
                for part, value in zip(("in", "ln", "bn"), weights[kind].detach()):
                    out[f"norm/{network}/{layer}/{key}/{part}"] = value
    gates = list(gate_parameters(model))
    if gates:
        out[f"norm/{network}/rho_mean"] = torch.cat([g.detach().flatten() for g in gates]).mean()
    return out


class NormsHook(Hook):
    """Switchable Norm weights and Batch-Instance gates of G and D, when they have such layers."""

    def __init__(self, writer: RunWriter, every: int) -> None:
        self.writer, self.every = writer, every

    def after_step(self, trainer: Trainer) -> None:
        tags = {**norm_tags(trainer.G, "G"), **norm_tags(trainer.D, "D")}
        if tags:
            self.writer.scalars(tags, trainer.step, every=self.every)


# ---------------------------------------------------------------------------------------------------- paired L1
# Headline metrics and which end is better: ``best/<tag>`` is logged after every evaluation.
BEST_OF: dict[str, Callable[[list[float]], float]] = {
    "eval/paired_l1": min,
    "eval/fid/mean": min,
    "eval/kid/mean": min,
    "eval/classifier_fd/mean": min,
    "eval/classifier_kd/mean": min,
    "eval/domain_accuracy": max,
}


@dataclass(frozen=True)
class MetricWatch:
    """Divergence by evaluation: the metric (lower is better; the first of ``tags`` that the hook logs) rose above
    ``factor`` times its best value so far."""

    tags: tuple[str, ...]
    factor: float
    stop: bool


class EvalHook(Hook):
    """An evaluation that also runs at step 0 of a fresh run and at the end; ``history`` holds (step, result).
    With a ``watch``, every new result is checked for divergence (:class:`MetricWatch`)."""

    history: list[tuple[int, Any]]
    watch: MetricWatch | None = None
    _final = False  # True during the end-of-run evaluation

    def series(self, tag: str) -> list[tuple[int, float]]:
        """(step, value) of one logged tag over the history (empty if this hook does not log it)."""
        return []

    def after_eval(self, trainer: Trainer, writer: RunWriter) -> None:
        """After each evaluation: ``best/<tag>`` (the best value so far of each headline metric, for the HPARAMS
        tab), then the divergence watch."""
        best = {}
        for tag, pick in BEST_OF.items():
            values = [v for _, v in self.series(tag) if math.isfinite(v)]
            if values:
                best[f"best/{tag}"] = pick(values)
        if best:
            writer.scalars(best, trainer.step, every=self.every)
        self.check_watch(trainer)

    def check_watch(self, trainer: Trainer) -> None:
        """Declare a divergence if the watched metric's newest value is non-finite or above factor x its best."""
        w = self.watch
        if w is None or not w.factor:
            return
        tag, points = next(((t, p) for t in w.tags if (p := self.series(t))), ("", []))
        if not points:
            return
        step, value = points[-1]
        best_step, best = min(points, key=lambda p: p[1] if math.isfinite(p[1]) else math.inf)
        # The final evaluation runs after the end-of-run checkpoint was saved: it records a divergence (status,
        # checkpoint, HPARAMS) but there is nothing left to stop.
        stop = w.stop and not self._final
        if not math.isfinite(value):
            trainer.declare_divergence(f"{tag} = {value} at step {step}", stop)
        elif best > 0 and value > w.factor * best:
            trainer.declare_divergence(
                f"{tag} = {value:.4g} exceeds hooks.stability.metric_factor {w.factor:g} x its best value "
                f"{best:.4g} (step {best_step})",
                stop,
            )

    def on_fit_start(self, trainer: Trainer) -> None:
        # At step 0, and after a resume whose checkpoint step was due but not evaluated (a stop request during the
        # evaluation, or a preemption), so that the curve has no gap.
        due = self.every and trainer.step % self.every == 0
        if due and (trainer.step == 0 or not self.history or self.history[-1][0] != trainer.step):
            self.after_step(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        # The final value when the run length is not a multiple of ``every``; not after a stop request, an error or
        # a non-finite loss (it would delay the checkpoint that Ctrl-C/SIGTERM promise, or score a diverged G).
        fresh = not self.history or self.history[-1][0] != trainer.step
        if self.every and trainer.completed and not bool(trainer.nonfinite) and fresh:
            self._final = True
            try:
                self.after_step(trainer)
            finally:
                self._final = False


class PairedL1Hook(EvalHook):
    """``eval/paired_l1`` and ``eval/paired_psnr`` on the synthetic domains' paired ground truth, also at step 0."""

    def __init__(self, writer: RunWriter, every: int, num_images: int, watch: MetricWatch | None = None) -> None:
        self.writer, self.every, self.num_images, self.watch = writer, every, num_images, watch
        self.history: list[tuple[int, float]] = []
        self.psnr: float | None = None  # of the latest evaluation

    def series(self, tag: str) -> list[tuple[int, float]]:
        return list(self.history) if tag == "eval/paired_l1" else []

    def after_step(self, trainer: Trainer) -> None:
        G, paired = trainer.sample_generator(), trainer.data.paired
        value, psnr = paired_scores(G, paired, trainer.device, self.num_images)
        self.history.append((trainer.step, value))
        self.psnr = psnr
        count = len(spread(torch.arange(paired.images.size(0)), self.num_images))
        self.writer.scalars(
            {"eval/paired_l1": value, "eval/paired_psnr": psnr}, trainer.step, every=self.every, count=count
        )
        log.info("step %d: eval/paired_l1 = %.4f, eval/paired_psnr = %.2f dB", trainer.step, value, psnr)
        self.after_eval(trainer, self.writer)

    def summary(self) -> list[str]:
        if not self.history:
            return []
        (s0, v0), (s1, v1) = self.history[0], self.history[-1]
        psnr = f" (PSNR {self.psnr:.2f} dB)" if self.psnr is not None and math.isfinite(self.psnr) else ""
        return [f"eval/paired_l1: {v0:.4f} at step {s0} -> {v1:.4f} at step {s1}{psnr}"]

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(item) for item in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(s), float(v)) for s, v in state.get("history", [])]


# ----------------------------------------------------------------------------------------------------- fid
EvalParts = tuple[nn.Module, FeatureExtractor, RealFeatures]  # (domain classifier, extractor, real features)


class FidHook(EvalHook):
    """FID/KID per target domain and domain accuracy of the sampling G (EMA if on), in eval mode, in a forked RNG:
    training state (weights, SN vectors, norm buffers, RNG streams) is untouched. Also at step 0 and at the end.

    ``setup(trainer)`` builds the evaluation's parts at the first evaluation (``gan.build``: the run's domain
    classifier, trained into ``<run>/classifier.pt`` if absent, the feature extractor chosen by
    ``hooks.fid.extractor``, and the real images' features).
    """

    def __init__(
        self,
        writer: RunWriter,
        every: int,
        num_images: int,
        setup: Callable[[Trainer], EvalParts],
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        batch_size: int = 50,
        watch: MetricWatch | None = None,
        collapse_below: float = 0.0,
    ) -> None:
        self.writer, self.every, self.num_images, self.setup = writer, every, num_images, setup
        self.kid_subsets, self.kid_subset_size, self.batch_size = kid_subsets, kid_subset_size, batch_size
        self.watch, self.collapse_below = watch, collapse_below
        self.history: list[tuple[int, dict[str, float]]] = []
        self._parts: EvalParts | None = None  # built lazily, at the first evaluation
        self.about: dict[str, Any] | None = None  # TranslationScores.about() of the latest evaluation

    def series(self, tag: str) -> list[tuple[int, float]]:
        return [(step, values[tag]) for step, values in self.history if tag in values]

    def after_step(self, trainer: Trainer) -> None:
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # classifier training and evaluation draw nothing from training
            if self._parts is None:
                self._parts = self.setup(trainer)
            classifier, extractor, reals = self._parts
            scores = evaluate_translations(
                trainer.sample_generator(),
                trainer.data,
                extractor,
                reals,
                trainer.device,
                self.num_images,
                classifier,
                self.kid_subsets,
                self.kid_subset_size,
                self.batch_size,
            )
        values = scores.scalars()
        if "stability/diversity/min" in values:
            # Collapse: translations into some domain far less varied than its real images (a signal, not a stop).
            values["stability/collapsed"] = float(values["stability/diversity/min"] < self.collapse_below)
        self.history.append((trainer.step, values))
        if self.about is None:  # what every value is measured on, once per run (TEXT tab)
            self.writer.text("eval/about", about_text(scores, reals.split), trainer.step)
        self.about = {**scores.about(), "real_split": reals.split}
        self.writer.scalars(values, trainer.step, scores.descriptions(), every=self.every)
        means = ", ".join(f"{k} = {v:.4g}" for k, v in values.items() if "mean" in k)
        log.info("step %d: %s (%s)", trainer.step, means, self.about["sample_sizes"])
        self.after_eval(trainer, self.writer)

    def status(self) -> dict[str, Any]:
        return {"evaluation": self.about} if self.about is not None else {}

    def summary(self) -> list[str]:
        if not self.history:
            return []
        (s0, v0), (s1, v1) = self.history[0], self.history[-1]
        keys = [k for k in v1 if k.endswith("/mean") or k == "eval/domain_accuracy"]
        lines = [f"{k}: {v0[k]:.4g} at step {s0} -> {v1[k]:.4g} at step {s1}" for k in keys if k in v0]
        if lines and self.about is not None:
            lines[0] += f" ({self.about['sample_sizes']})"
        report = getattr(self._parts[0], "report", None) if self._parts is not None else None
        if report and report.get("num_heldout"):
            lines.append(
                f"domain classifier: held-out accuracy {report['heldout_accuracy']:.4f} on {report['num_heldout']} "
                "real images (the judge behind eval/domain_accuracy)"
            )
        return lines

    def state_dict(self) -> dict[str, Any]:
        return {"history": [[step, dict(values)] for step, values in self.history], "about": self.about}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(s), {k: float(v) for k, v in values.items()}) for s, values in state.get("history", [])]
        self.about = state.get("about")


def about_text(scores: TranslationScores, real_split: str) -> str:
    """Markdown for the TEXT tab: the images and features behind the eval/* distances, and what they compare with."""
    info = scores.info
    fd, kd = scores.distance_names()
    lines = [
        rf"**eval/{fd}/\*, eval/{kd}/mean**: {scores.sample_sizes()} "
        f"(held-out sources translated into each domain, uint8; real images from the {real_split} split).",
        "",
        f"Features: {info.get('extractor')}, weights `{info.get('weights')}`"
        + (f" ({info['weights_source']})" if info.get("weights_source") else "")
        + f", protocol {info.get('protocol')}.",
        "",
        "FID at these sample sizes is dominated by its small-sample bias: compare it only with FIDs of the same "
        "numbers of images and the same features (another run of this project, or `evaluate.py fid --checkpoint` "
        "with the same --num-images), never with published FIDs over 10k-50k images. KID is unbiased in the sample "
        "size.",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- nan guard
class NanGuardHook(Hook):
    """Stops the run when any loss since the last check was NaN or infinite (the trainer accumulates a device flag,
    so checking costs one sync per ``every`` steps), and declares a divergence when the critic's real/fake gap
    exceeded ``gap_limit`` at some step since the last check (0: not checked). The checkpoint hook runs the same
    check before every save, whatever ``every`` is."""

    def __init__(self, every: int, gap_limit: float = 0.0, stop: bool = True) -> None:
        self.every, self.gap_limit, self.stop = every, gap_limit, stop

    def after_step(self, trainer: Trainer) -> None:
        self.check(trainer)

    def check(self, trainer: Trainer) -> None:
        check_finite(trainer)
        if self.gap_limit:
            gap = float(trainer.max_gap)
            trainer.max_gap.zero_()
            if gap > self.gap_limit:
                trainer.declare_divergence(
                    f"critic gap |mean D(real) - mean D(fake)| = {gap:.4g} exceeds hooks.stability.gap_limit "
                    f"{self.gap_limit:g}",
                    self.stop,
                )


def check_finite(trainer: Trainer) -> None:
    """Raise NonFiniteLossError if a loss was non-finite at any step so far."""
    if bool(trainer.nonfinite):
        parts = {**{f"D/{k}": v for k, v in trainer.last.d.items()}, **{f"G/{k}": v for k, v in trainer.last.g.items()}}
        bad = [k for k, v in parts.items() if not math.isfinite(float(v))] or ["an earlier step's loss"]
        if trainer.divergence is None:
            trainer.divergence = {"step": trainer.step, "reason": f"non-finite loss ({', '.join(bad)})"}
        raise NonFiniteLossError(
            f"non-finite loss by step {trainer.step} ({', '.join(bad)}); training stopped, the last good "
            "checkpoint was kept. Lower the learning rates or check the data."
        )


# ------------------------------------------------------------------------------------------------- stability
class StabilityHook(Hook):
    """``stability/*`` every ``every`` steps (see README, Stability signals), with D in eval mode, on fixed training
    reals, fixed held-out reals and their translations, drawing only from the hook's own random generator:

    - ``stability/overfit/r_train``, ``r_heldout``, ``gap``: StyleGAN2-ADA's over-fitting heuristic
      r_t = E[sign(D(x) - t)] on training and on held-out reals (t: the loss's real/fake level, or for a WGAN
      critic, which has none, the midpoint of D's mean outputs on the training reals and the translations);
      ``gap`` = r_train - r_heldout grows as D memorises its training set;
    - ``stability/grad_norm/{real,fake,interp,max}``: D's input-gradient norms (as ``lipschitz/D/grad_norm/*``);
      above ``grad_norm_limit`` the run has diverged;
    - ``stability/spectrum/<layer>/top<k>`` and ``.../mean_ratio``: the largest singular values of each D layer's
      reshaped weight as the forward uses it (W / sigma under SN) and the mean of sigma_i / sigma_1 over the whole
      spectrum (SR-GAN's spectral collapse shows as it falling);
    - ``stability/diverged``: 1 once a divergence signal fired (also logged at the end of the run).
    """

    def __init__(
        self,
        writer: RunWriter,
        every: int,
        num_images: int,
        grad_norm_limit: float,
        stop: bool,
        spectrum_top: int = 3,
        threshold: float | None = None,
        seed: int = 0,
    ) -> None:
        self.writer, self.every, self.num_images = writer, every, num_images
        self.grad_norm_limit, self.stop, self.spectrum_top = grad_norm_limit, stop, spectrum_top
        self.threshold, self.seed = threshold, seed
        self.generator = torch.Generator()
        self.train_reals: torch.Tensor | None = None
        self.reals: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.latest: dict[str, float] = {}

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.every:
            return
        self.generator.manual_seed(self.seed + 104729 * (trainer.step + 1))
        self.train_reals, _ = spread_batch(trainer.data.train, self.num_images, trainer.device)
        self.reals, self.labels = held_out_batch(trainer, self.num_images)
        if trainer.step == 0:
            self.after_step(trainer)

    def after_step(self, trainer: Trainer) -> None:
        D, G = trainer.D, trainer.sample_generator()
        order = torch.randperm(self.labels.size(0), generator=self.generator).to(self.labels.device)
        with evaluating(G, D):
            fake = G(self.reals, trainer.domain_vector(self.labels[order]))
            scores = [adversarial_output(D, x).flatten(1).mean(1) for x in (self.train_reals, self.reals, fake)]
        values: dict[str, Any] = overfitting(*scores, self.threshold)
        grads = grad_norms(D, self.reals, fake, self.generator)
        values.update({k.replace("lipschitz/D/", "stability/"): v for k, v in grads.items()})
        values["stability/grad_norm/max"] = torch.stack(list(grads.values())).max()
        values.update(spectrum_tags(D, self.spectrum_top))
        worst = float(values["stability/grad_norm/max"])
        exploded = bool(self.grad_norm_limit) and not worst <= self.grad_norm_limit  # nan counts as exploded
        values["stability/diverged"] = float(trainer.divergence is not None or exploded)
        self.writer.scalars(values, trainer.step, every=self.every, count=self.labels.size(0))
        self.latest = {k: float(v) for k, v in values.items() if not k.startswith("stability/spectrum/")}
        if exploded:
            trainer.declare_divergence(
                f"D's input-gradient norm {worst:.4g} exceeds hooks.stability.grad_norm_limit {self.grad_norm_limit:g}",
                self.stop,
            )

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.every and trainer.divergence is not None:
            self.writer.scalars({"stability/diverged": 1.0}, trainer.step)

    def summary(self) -> list[str]:
        if not self.latest:
            return []
        v = self.latest
        return [
            f"stability: D over-fitting r_t {v['stability/overfit/r_train']:.2f} on training reals vs "
            f"{v['stability/overfit/r_heldout']:.2f} held out; D's input-gradient norm up to "
            f"{v['stability/grad_norm/max']:.3g}"
        ]


def overfitting(
    train: torch.Tensor, held_out: torch.Tensor, fake: torch.Tensor, threshold: float | None
) -> dict[str, torch.Tensor]:
    """r_t = E[sign(D(x) - t)] on training and held-out reals from per-image D scores (see StabilityHook)."""
    t = (train.mean() + fake.mean()) / 2 if threshold is None else torch.as_tensor(threshold, device=train.device)
    r_train, r_held = torch.sign(train - t).mean(), torch.sign(held_out - t).mean()
    return {
        "stability/overfit/r_train": r_train,
        "stability/overfit/r_heldout": r_held,
        "stability/overfit/gap": r_train - r_held,
    }


def spectrum_tags(D: nn.Module, top: int) -> dict[str, torch.Tensor]:
    """``stability/spectrum/<layer>/top1..top<k>`` and ``.../mean_ratio`` for every conv and linear layer of D (the
    weight its eval-mode forward uses, reshaped as spectral norm reshapes it)."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in D.named_modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        check_stop()
        weight = eval_weight(layer)
        weight = weight.to(work_dtype(weight.dtype)).movedim(reshape_dim(layer), 0)
        values = torch.linalg.svdvals(weight.reshape(weight.shape[0], -1))
        key = f"stability/spectrum/{name.removeprefix('main.')}"
        for i, value in enumerate(values[:top]):
            out[f"{key}/top{i + 1}"] = value
        out[f"{key}/mean_ratio"] = (values / values[0]).mean() if values[0] > 0 else values.new_zeros(())
    return out


# ------------------------------------------------------------------------------------------------- checkpoints
class CheckpointHook(Hook):
    """Atomic checkpoints every ``every`` steps and at the end; keeps the newest ``keep`` plus ``last.pt``.

    A state with a non-finite loss is never written, so the last good checkpoint stays intact. At the end it saves
    before any final evaluation runs (``saves_run``: the trainer calls it first), and again afterwards only if the
    hooks' state changed meanwhile (a final evaluation joined their history).
    """

    saves_run = True

    def __init__(
        self,
        directory: Path,
        every: int,
        keep: int,
        guard: Callable[[Trainer], None] = check_finite,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.directory, self.every, self.keep, self.guard = Path(directory), every, keep, guard
        self.flush = flush  # the writer's flush: what was logged up to a checkpoint is on disk before it
        self.saved_step: int | None = None
        self._saved_hooks: Any = None
        self._end_state_saved = False  # on_fit_end found the state worth keeping (not torn, not diverged)

    def after_step(self, trainer: Trainer) -> None:
        self.save(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        self._end_state_saved = False
        if trainer.torn:
            # An exception inside a step left G, D and their optimizers half-updated: saving that state would make
            # a resume apply part of the step twice. The newest checkpoint on disk stays the last good one.
            log.warning("not saving a checkpoint: step %d was interrupted half-way", trainer.step + 1)
            return
        if bool(trainer.nonfinite) and trainer.failing:
            log.warning("not saving a checkpoint: a loss was non-finite")  # the NaN guard has stopped the run
            return
        if trainer.stopped_by_divergence:
            log.warning("not saving a checkpoint of the diverged state (step %d)", trainer.step)
            return
        # A diverged run that was not stopped by the NaN guard (guard off or not yet due, finished or stopped by a
        # signal) gets this far: save() raises NonFiniteLossError, so it ends with exit code 3 and writes nothing.
        self.save(trainer)
        self._end_state_saved = self.saved_step == trainer.step

    def after_fit_end(self, trainer: Trainer) -> None:
        # Only a state that on_fit_end itself judged worth keeping is saved again (never a torn or diverged one).
        if self._end_state_saved and trainer.hook_states() != self._saved_hooks:
            self.save(trainer, again=True)

    def save(self, trainer: Trainer, again: bool = False) -> None:
        if (self.saved_step == trainer.step and not again) or trainer.step == 0:
            return
        self.guard(trainer)  # the NaN guard's checks (non-finite loss, critic gap) before anything is written
        if self.flush is not None:
            # scalars.jsonl and the events up to this step reach the OS first: after a kill -9 a resume from this
            # checkpoint finds every row it covers (the rows after it are purged on resume).
            self.flush()
        state = {"format": FORMAT, **trainer.state_dict()}
        path = save_checkpoint(state, self.directory, trainer.step, self.keep)
        self.saved_step, self._saved_hooks = trainer.step, state["hooks"]
        log.info("saved checkpoint %s", path)


# ------------------------------------------------------------------------------------------------------ progress
class ProgressHook(Hook):
    """A tqdm bar with it/s and ETA of the training steps alone, and one line above it after every evaluation.

    The bar's clock is the trainer's :meth:`~gan.trainer.Trainer.training_clock`, which stands still while hooks run,
    so evaluations and checkpoints change neither the rate nor the ETA (the elapsed time shown is training time);
    the bar starts after the step-0 evaluations. The latest losses are shown every ``postfix_every`` steps (one
    sync). After a step with evaluations (eval/* or lipschitz/* tags, written by the hooks before this one), the
    line of :func:`eval_line` goes to train.log and, with the bar on, to the console."""

    def __init__(
        self,
        total: int,
        postfix_every: int,
        enabled: bool = True,
        writer: RunWriter | None = None,
        sample_sizes: Callable[[], str | None] | None = None,
    ) -> None:
        self.total, self.postfix_every, self.enabled = total, postfix_every, enabled
        self.writer, self.sample_sizes = writer, sample_sizes
        self.bar = None
        self._last_line: str | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self._report(trainer)  # the step-0 evaluations ran in the hooks before this one
        self.bar = tqdm(total=self.total, initial=trainer.step, disable=not self.enabled, unit="it", dynamic_ncols=True)
        if hasattr(self.bar, "_time"):  # tqdm reads its clock through this attribute
            self.bar._time = trainer.training_clock
            self.bar.start_t = self.bar.last_print_t = trainer.training_clock()

    def after_step(self, trainer: Trainer) -> None:
        self.bar.update(1)
        if self.postfix_every and trainer.step % self.postfix_every == 0:
            parts = {
                **{f"D_{k}": v for k, v in trainer.last.d.items()},
                **{f"G_{k}": v for k, v in trainer.last.g.items()},
            }
            self.bar.set_postfix({k: f"{float(v):.3f}" for k, v in parts.items()}, refresh=False)
        self._report(trainer)

    def _report(self, trainer: Trainer) -> None:
        writer = self.writer
        if writer is None or writer.values_step != trainer.step:
            return
        line = eval_line(trainer.step, writer.step_values, self.sample_sizes() if self.sample_sizes else None)
        if line is None or line == self._last_line:
            return
        self._last_line = line
        log.info(line)
        if self.enabled:
            tqdm.write(line, file=sys.stderr)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
        self._report(trainer)  # the final evaluation (if any) ran in the hooks before this one


def _distance_name(key: str) -> str:
    name = key.split("/")[1]
    return {"fid": "FID", "kid": "KID"}.get(name, name.replace("_fd", " FD").replace("_kd", " KD"))


def eval_line(step: int, values: dict[str, float], sample_sizes: str | None = None) -> str | None:
    """One console line for the evaluations of ``step`` (None without any): paired L1 and PSNR, the Frechet and
    kernel distances with their sample sizes, domain accuracy, and D's certified Lipschitz upper bound against the
    largest measured lower bound."""
    parts = []
    if "eval/paired_l1" in values:
        text = f"paired L1 {values['eval/paired_l1']:.4f}"
        if "eval/paired_psnr" in values:
            text += f", PSNR {values['eval/paired_psnr']:.2f} dB"
        parts.append(text)
    means = [k for k in values if k.startswith("eval/") and k.endswith("/mean")]
    fd = [k for k in means if k.split("/")[1].endswith(("fid", "_fd"))]
    kd = [k for k in means if k.split("/")[1].endswith(("kid", "_kd"))]
    if fd or kd:
        text = ", ".join(f"{_distance_name(k)} {values[k]:.4g}" for k in fd + kd)
        parts.append(text + (f" ({sample_sizes})" if sample_sizes else ""))
    if "eval/domain_accuracy" in values:
        parts.append(f"domain accuracy {values['eval/domain_accuracy']:.3f}")
    if "lipschitz/D/upper_bound" in values:
        lower = [v for k, v in values.items() if k.startswith(("lipschitz/D/grad_norm/", "lipschitz/D/jacobian_norm/"))]
        text = f"Lipschitz(D) <= {values['lipschitz/D/upper_bound']:.4g}"
        parts.append(text + (f", >= {max(lower):.4g} measured" if lower else ""))
    return f"step {step}: " + " | ".join(parts) if parts else None
