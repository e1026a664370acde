"""What every TensorBoard tag of a run means: the descriptions TensorBoard shows beside a chart (the info icon of a
Time Series card), and which tags are measured only now and then (``is_sparse``).

A hook that knows more about a value than its tag (FID's sample sizes and network) passes its own description to
``RunWriter.scalars``; every other tag is described here. ``describe`` returns None for a tag nobody described, and
tests/test_tags.py checks that no tag a run writes is left without one.
"""

from __future__ import annotations

import re

# Tags logged at every hooks.scalars step (dense); every other scalar tag is measured less often (sparse) and is
# repeated between its measurements in TensorBoard so that smoothing cannot shift it (RunWriter.repeat_sparse).
DENSE_PREFIXES = ("loss/", "lr/", "perf/", "stability/critic_gap")

_SPARSE_NOTE = (
    " Measured every {every}; between two measurements TensorBoard shows the last value again at every "
    "scalars step (a staircase), so smoothing cannot shift it: the exact values are the tops of the risers and "
    "the rows of scalars.jsonl."
)

_LOSS_NOTE = " Value of the step's own batch (no averaging): set TensorBoard's smoothing to read the trend."

_GRAD_NORM = (
    "Largest input-gradient norm ||grad_x D(x)|| over {n} {what}: a measured LOWER bound on D's Lipschitz constant "
    "(D in eval mode, summed patch outputs)."
)
_JACOBIAN = (
    "Largest spectral norm of the Jacobian of D's patch map over {n} {what} (power iteration with jvp/vjp): a "
    "measured LOWER bound on D's Lipschitz constant as a map from images to patch scores."
)
_WHAT = {
    "real": "held-out real images",
    "fake": "translations of held-out images",
    "interp": "random interpolates between held-out reals and their translations",
}

# (pattern, description); the first match wins. {every} and {n} are filled in from the hook settings when known.
_DESCRIPTIONS: list[tuple[str, str]] = [
    (r"loss/D/adv", "D's adversarial loss on real and translated images (the form loss.adversarial names)."),
    (
        r"loss/D/cls",
        "D's domain-classification loss on the real images' own labels (cross-entropy; BCE for "
        "multi-label data), before lambda_cls.",
    ),
    (r"loss/D/gp", "Gradient penalty (||grad D(x_hat)|| - 1)^2 on interpolates of reals and fakes, before lambda_gp."),
    (r"loss/D/r1", "R1 penalty ||grad D(x_real)||^2 / 2 on the real images, before lambda_r1."),
    (r"loss/G/adv", "G's adversarial loss on its translations (the form loss.adversarial names)."),
    (
        r"loss/G/cls",
        "Domain-classification loss of G's translations, as D's classifier head sees them, before lambda_cls.",
    ),
    (
        r"loss/G/rec",
        "Cycle reconstruction L1 |x - G(G(x, c_target), c_source)| in [-1, 1] pixel units, before lambda_rec.",
    ),
    (r"lr/(G|D)", "Learning rate of the {0} optimizer (linear decay over train.lr_decay_steps)."),
    (r"perf/it_per_s", "Training speed in steps per second since the previous scalars step, hook time included."),
    (
        r"stability/critic_gap",
        "mean D(real) - mean D(fake) of the latest D step's adversarial outputs; a gap that "
        "grows without bound signals divergence (hooks.stability.gap_limit).",
    ),
    (
        r"sigma/D/(.+)/sn_estimate",
        "Spectral normalization's estimate u^T W v of the largest singular value of layer "
        "{0}'s RAW weight reshaped to a matrix: the sigma SN divides by (power iteration state, no extra work).",
    ),
    (
        r"sigma/D/(.+)/operator",
        "True operator norm (largest gain ||layer(x)|| / ||x||) of layer {0} as the forward "
        "uses it (after SN) on its real input shape, by power iteration; SN alone does not make this 1 for a conv.",
    ),
    (
        r"lipschitz/D/upper_bound",
        "Certified UPPER bound on D's Lipschitz constant (adversarial path, eval mode): the "
        "product of every layer's bound. Loose by design; compare it with the measured lower bounds through "
        "lipschitz/D/bound_ratio.",
    ),
    (
        r"lipschitz/D/bound_ratio",
        "lipschitz/D/upper_bound divided by the largest measured lower bound "
        "(lipschitz/D/grad_norm/* and jacobian_norm/*): how loose the certificate is; D's true constant lies between "
        "the two.",
    ),
    (r"lipschitz/D/grad_norm/(real|fake|interp)", _GRAD_NORM),
    (r"lipschitz/D/jacobian_norm/(real|fake|interp)", _JACOBIAN),
    (r"norm/(G|D)/rho_mean", "Mean gate rho of {0}'s Batch-Instance Norm layers (1 = batch norm, 0 = instance norm)."),
    (
        r"norm/(G|D)/(.+)/switch_weights/(in|ln|bn)",
        "Switchable Norm layer {1} of {0}: softmax importance of the "
        "{2} statistics in the mean (the three weights sum to 1).",
    ),
    (
        r"norm/(G|D)/(.+)/switch_var_weights/(in|ln|bn)",
        "Switchable Norm layer {1} of {0}: softmax importance of the "
        "{2} statistics in the variance (the three weights sum to 1).",
    ),
    (
        r"eval/paired_l1",
        "Mean absolute error, in [-1, 1] pixel units, between translations of {n} held-out images "
        "and their true rendering in the target domain (synthetic data only; lower is better).",
    ),
    (
        r"eval/paired_psnr",
        "PSNR in dB of the same translations against their true rendering (synthetic data only; higher is better).",
    ),
    (
        r"eval/domain_accuracy",
        "Share of the translations that the run's domain classifier assigns to their target domain (0-1).",
    ),
    (
        r"eval/(fid|kid|.+_fd|.+_kd)/mean",
        "Mean of eval/{0}/<domain> (a distance between translations and real images of the target domain, lower is "
        "better) over the target domains; the TEXT tab's eval/about names the images and features.",
    ),
    (
        r"eval/(fid|.+_fd)/(.+)",
        "Frechet distance ({0}) between the translations into {1} and real {1} images (lower is better); the TEXT "
        "tab's eval/about names the images and features.",
    ),
    (r"best/(.+)", "Best value of {0} so far in this run (the HPARAMS tab's metric)."),
    (r"stability/diverged", "1 once a divergence signal fired in this run (hooks.stability), else 0."),
    (
        r"stability/collapsed",
        "1 when the translations into some domain are far less varied than its real images "
        "(stability/diversity/min below hooks.stability.collapse_below), else 0.",
    ),
    (r"stability/diversity/min", "Smallest stability/diversity/<domain> over the target domains."),
    (
        r"stability/diversity/(.+)",
        "Diversity ratio of the translations into {0}: their mean pairwise feature "
        "distance over that of real {0} images (about 1 = as varied as the data; near 0 = mode collapse).",
    ),
    (
        r"stability/overfit/r_train",
        "StyleGAN2-ADA's r_t = E[sign(D(x) - t)] on {n} fixed TRAINING reals (t: the "
        "loss's real/fake level); near 1 when D is sure of every training image.",
    ),
    (
        r"stability/overfit/r_heldout",
        "The same r_t on {n} fixed HELD-OUT reals; it falls behind r_train as D memorises its training set.",
    ),
    (r"stability/overfit/gap", "r_train - r_heldout: D's over-fitting to its training set (0 = none)."),
    (
        r"stability/grad_norm/max",
        "Largest of stability/grad_norm/{{real,fake,interp}}; above "
        "hooks.stability.grad_norm_limit the run counts as diverged.",
    ),
    (r"stability/grad_norm/(real|fake|interp)", _GRAD_NORM),
    (
        r"stability/spectrum/(.+)/top(\d+)",
        "Singular value number {1} of D layer {0}'s weight as the forward uses it "
        "(W / sigma under SN), reshaped as SN reshapes it.",
    ),
    (
        r"stability/spectrum/(.+)/mean_ratio",
        "Mean of sigma_i / sigma_1 over the whole spectrum of D layer {0}'s "
        "weight; a falling value is SR-GAN's spectral collapse.",
    ),
    (
        r"images/translations",
        "Rows: fixed held-out inputs (source domain at the left); columns: the input, then its "
        "translation into each target domain (named on top), by the sampling G (EMA if on). Also saved as "
        "images/translations_<step>.png in the run folder.",
    ),
    (r"config", "The run's resolved config (every key, defaults included)."),
    (r"eval/about", "What the eval/* distances are measured on: images, features, protocol."),
]
_COMPILED = [(re.compile(pattern + r"\Z"), text) for pattern, text in _DESCRIPTIONS]


_NOT_SCALARS = ("images/", "config", "eval/about")


def is_sparse(tag: str) -> bool:
    """True for scalar tags measured less often than every scalars step (evaluations, sigma, Lipschitz, stability)."""
    return not tag.startswith(DENSE_PREFIXES)


def describe(tag: str, every: int | None = None, count: int | None = None, text: str | None = None) -> str | None:
    """The description of ``tag``: what it measures, its unit or scale, the images it is computed on (``count``,
    when known) and, for a sparse tag, how often it is measured (``every`` steps) and how to read it smoothed.
    ``text`` replaces this module's own description (a hook that knows more); None for an undescribed tag."""
    if text is None:
        for pattern, template in _COMPILED:
            match = pattern.match(tag)
            if match is not None:
                raw = match.groups()
                n = str(count) if count else "the hook's"
                what = _WHAT.get(raw[0], "") if raw else ""
                text = template.format(*raw, n=n, what=what)
                break
        else:
            return None
    text = text if text.endswith(".") else text + "."
    if tag.startswith("loss/"):
        text += _LOSS_NOTE
    if is_sparse(tag) and not tag.startswith(_NOT_SCALARS):
        text += _SPARSE_NOTE.format(every=f"{every} steps" if every else "few steps")
    return text
