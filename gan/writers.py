"""The run's one writer: TensorBoard event files plus a JSON-lines copy of every scalar (main process only)."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.plugins.image import metadata as image_plugin
from tensorboard.plugins.scalar import metadata as scalar_plugin
from tensorboard.plugins.text import metadata as text_plugin
from tensorboard.util.tensor_util import make_tensor_proto
from torch.utils.tensorboard import SummaryWriter

from gan.tags import describe, is_sparse


def event_folder(run_dir: Path) -> Path:
    """Where a run's TensorBoard events go: the run folder itself, so that TensorBoard lists the run under its own
    name (``tensorboard --logdir runs`` shows ``<run>``); ``<run>/tb`` for runs begun by versions that wrote there."""
    old = Path(run_dir) / "tb"
    return old if old.is_dir() else Path(run_dir)


def has_events(run_dir: Path) -> bool:
    """True when the run folder already holds TensorBoard event files."""
    return any(event_folder(run_dir).glob("events.out.tfevents.*"))


class RunWriter:
    """Writes scalars and images as TensorBoard events in the run folder and scalars to ``<run_dir>/scalars.jsonl``.

    ``purge_step`` (the step a resumed run restarts from) drops what the interrupted run logged at or after it, in
    TensorBoard and in ``scalars.jsonl`` alike, so that every tag has one value per step and curves do not fold
    back on themselves.

    Every tag carries a description (gan.tags) in its first event. Sparse tags (measured every few hundred steps:
    evaluations, sigma, Lipschitz, stability) are repeated in TensorBoard, not in ``scalars.jsonl``, at every
    ``repeat_sparse`` call (the scalars hook's steps): TensorBoard smooths over points, not steps, and its default
    smoothing of 0.6 would otherwise turn five evaluations into wrong values.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None, deferred: bool = False) -> None:
        """``deferred``: touch nothing on disk until :meth:`open` (a training opens its writer, and purges what the
        interrupted run logged after its checkpoint, only once every check of the resume has passed)."""
        self.run_dir, self.purge_step = Path(run_dir), purge_step
        self._described: set[str] = set()
        self.step_values: dict[str, float] = {}  # every scalar logged at values_step (the console's eval line)
        self.values_step: int | None = None
        if not deferred:
            self.open()

    def open(self) -> None:
        purge_step = self.purge_step
        # Every writer opens its file with a session start (at step 0 for a new run): TensorBoard's Python loader
        # ignores the first start it sees, so the resumed writer's start must be the second for its purge to work.
        start = 0 if purge_step is None else purge_step
        self.tb = SummaryWriter(log_dir=str(event_folder(self.run_dir)), purge_step=start)
        jsonl = self.run_dir / "scalars.jsonl"
        if purge_step is not None and jsonl.is_file():
            purge_jsonl(jsonl, purge_step)
        # A resumed run goes on repeating the values its sparse tags had at the checkpoint.
        self._sparse: dict[str, tuple[int, float]] = {
            tag: (step, float(value)) for tag, (step, value) in last_values(jsonl).items() if is_sparse(tag)
        }
        self._jsonl = open(jsonl, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _metadata(self, tag: str, plugin: Any, text: str | None = None, **where: int | None) -> SummaryMetadata | None:
        """The metadata of ``tag``'s first event in this writer (its plugin and description, see gan.tags), else
        None: TensorBoard keeps the metadata of a tag's first event."""
        if tag in self._described:
            return None
        self._described.add(tag)
        return plugin.create_summary_metadata(display_name="", description=describe(tag, text=text, **where) or "")

    def _add(self, tag: str, tensor: TensorProto, step: int, meta: SummaryMetadata | None) -> None:
        value = Summary.Value(tag=tag, tensor=tensor)
        if meta is not None:
            value.metadata.CopyFrom(meta)
        self.tb._get_file_writer().add_summary(Summary(value=[value]), step)

    def _scalar(self, tag: str, number: float, step: int, meta: SummaryMetadata | None = None) -> None:
        # The scalars plugin's tensor format (what TF2's tf.summary.scalar writes): TensorBoard's fast data server
        # keeps a description only from this format, not from the legacy simple_value one.
        self._add(tag, make_tensor_proto(np.float32(number)), step, meta)

    def scalars(
        self,
        values: dict[str, float | torch.Tensor],
        step: int,
        descriptions: dict[str, str] | None = None,
        every: int | None = None,
        count: int | None = None,
    ) -> None:
        """Log several scalars at ``step``; tensors are converted here (the one place numbers leave the device).
        Each tag's description (``descriptions`` of the caller, else gan.tags, told the hook's ``every`` and the
        ``count`` of images it measures on) goes into its first event: TensorBoard shows the text of a tag's first
        event as its description (the info icon of its card)."""
        if step != self.values_step:
            self.step_values, self.values_step = {}, step
        row: dict[str, float] = {}
        for tag, value in values.items():
            number = float(value.detach().float().cpu()) if isinstance(value, torch.Tensor) else float(value)
            if tag in self.step_values and _same(self.step_values[tag], number):
                continue  # logged already at this step by another hook (sigma and lipschitz share sn_estimate)
            text = (descriptions or {}).get(tag)
            self._scalar(tag, number, step, self._metadata(tag, scalar_plugin, text, every=every, count=count))
            if is_sparse(tag):
                self._sparse[tag] = (step, number)
            self.step_values[tag] = number
            row[tag] = number if math.isfinite(number) else str(number)
        if row:
            self._jsonl.write(json.dumps({"step": step, "time": time.time(), **row}) + "\n")

    def repeat_sparse(self, step: int) -> None:
        """Log every sparse tag's latest value again at ``step`` (TensorBoard only; see the class docstring)."""
        for tag, (last, number) in self._sparse.items():
            if last < step:
                self._scalar(tag, number, step, self._metadata(tag, scalar_plugin))

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """Log one (3, H, W) image: uint8, or float with values in [0, 1]."""
        image = image.detach().cpu()
        if image.dtype != torch.uint8:
            image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
        height, width = image.shape[1:]
        tensor = make_tensor_proto([str(width).encode(), str(height).encode(), buffer.getvalue()], dtype=np.object_)
        self._add(tag, tensor, step, self._metadata(tag, image_plugin))

    def text(self, tag: str, text: str, step: int) -> None:
        """Markdown text (TensorBoard's TEXT tab)."""
        self._add(tag, make_tensor_proto(np.array(text, dtype=np.object_)), step, self._metadata(tag, text_plugin))

    def custom_scalars(self, layout: dict[str, dict[str, list[object]]]) -> None:
        """Group tags into charts in TensorBoard's Custom Scalars dashboard ({category: {title: [kind, tags]}})."""
        self.tb.add_custom_scalars(layout)

    def flush(self) -> None:
        self.tb.flush()
        self._jsonl.flush()

    def close(self) -> None:
        if hasattr(self, "tb"):  # a deferred writer that never opened has nothing to close
            self.tb.close()
            self._jsonl.close()


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def purge_jsonl(path: Path, purge_step: int) -> int:
    """Rewrite ``path`` (atomically) without the rows of step >= ``purge_step``; returns how many were dropped. A
    torn last line (the interrupted run died mid-write) is dropped too."""
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if int(row.get("step", -1)) >= purge_step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        tmp.replace(path)
    return dropped


def read_scalars(path: Path) -> dict[str, dict[int, float]]:
    """Every tag of a ``scalars.jsonl`` as {step: value}, sorted by step. Robust to what runs leave behind: an
    unreadable or torn line is skipped, a step logged twice (a run resumed from files older than its purge) keeps the
    value written last, and the strings "nan"/"inf"/"-inf" (how non-finite values are written) become floats."""
    out: dict[str, dict[int, float]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(row, dict):
            continue
        for tag, value in row.items():
            if tag in ("step", "time"):
                continue
            try:
                out.setdefault(tag, {})[step] = float(value)
            except (TypeError, ValueError):
                continue
    return {tag: dict(sorted(series.items())) for tag, series in out.items()}


def last_values(path: Path) -> dict[str, tuple[int, float | str]]:
    """{tag: (step, value)} at each tag's highest step; non-finite values as strings (JSON has no NaN)."""
    out: dict[str, tuple[int, float | str]] = {}
    for tag, series in read_scalars(path).items():
        step, value = next(reversed(series.items()))
        out[tag] = (step, value if math.isfinite(value) else str(value))
    return out


def write_summaries(folder: Path, summaries: list[Summary], suffix: str) -> Path:
    """One event file in ``folder`` holding ``summaries`` (at step 0), named ``events.out.tfevents.*<suffix>``;
    earlier files with the same suffix are removed once the new one is complete (TensorBoard reads every file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    old = set(folder.glob(f"events.out.tfevents.*{suffix}"))
    writer = SummaryWriter(log_dir=str(folder), filename_suffix=suffix)
    try:
        for summary in summaries:
            writer._get_file_writer().add_summary(summary, 0)
    finally:
        writer.close()
    new = set(folder.glob(f"events.out.tfevents.*{suffix}")) - old
    for path in old - new:
        path.unlink(missing_ok=True)
    return next(iter(new))
