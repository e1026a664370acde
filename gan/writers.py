"""The run's one writer: TensorBoard event files plus a JSON-lines copy of every scalar (main process only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from torch.utils.tensorboard import SummaryWriter


class RunWriter:
    """Writes scalars and images under ``<run_dir>/tb`` and scalars to ``<run_dir>/scalars.jsonl``.

    ``purge_step`` (the step a resumed run restarts from) drops what the interrupted run logged at or after it, in
    TensorBoard and in ``scalars.jsonl`` alike, so that every tag has one value per step and curves do not fold
    back on themselves.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge_step)
        jsonl = self.run_dir / "scalars.jsonl"
        if purge_step is not None and jsonl.is_file():
            purge_jsonl(jsonl, purge_step)
        self._jsonl = open(jsonl, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._described: set[str] = set()

    def scalars(
        self, values: dict[str, float | torch.Tensor], step: int, descriptions: dict[str, str] | None = None
    ) -> None:
        """Log several scalars at ``step``; tensors are converted here (the one place numbers leave the device).
        ``descriptions`` ({tag: text}) go into a tag's metadata the first time this writer logs it: TensorBoard shows
        the text of a tag's first event as its description (the scalar card's info tooltip)."""
        row: dict[str, float] = {}
        for tag, value in values.items():
            number = float(value.detach().float().cpu()) if isinstance(value, torch.Tensor) else float(value)
            if descriptions and tag in descriptions and tag not in self._described:
                meta = SummaryMetadata(summary_description=descriptions[tag])
                summary = Summary(value=[Summary.Value(tag=tag, simple_value=number, metadata=meta)])
                self.tb._get_file_writer().add_summary(summary, step)
                self._described.add(tag)
            else:
                self.tb.add_scalar(tag, number, step)
            row[tag] = number if math.isfinite(number) else str(number)
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **row}) + "\n")

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """Log one (3, H, W) image with values in [0, 1]."""
        self.tb.add_image(tag, image.detach().float().cpu().clamp(0, 1), step)

    def text(self, tag: str, text: str, step: int) -> None:
        """Markdown text (TensorBoard's TEXT tab)."""
        self.tb.add_text(tag, text, step)

    def custom_scalars(self, layout: dict[str, dict[str, list[object]]]) -> None:
        """Group tags into charts in TensorBoard's Custom Scalars dashboard ({category: {title: [kind, tags]}})."""
        self.tb.add_custom_scalars(layout)

    def flush(self) -> None:
        self.tb.flush()
        self._jsonl.flush()

    def close(self) -> None:
        self.tb.close()
        self._jsonl.close()


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
