"""The run's one writer: TensorBoard event files plus a JSON-lines copy of every scalar (main process only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
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

    def scalars(self, values: dict[str, float | torch.Tensor], step: int) -> None:
        """Log several scalars at ``step``; tensors are converted here (the one place numbers leave the device)."""
        row: dict[str, float] = {}
        for tag, value in values.items():
            number = float(value.detach().float().cpu()) if isinstance(value, torch.Tensor) else float(value)
            self.tb.add_scalar(tag, number, step)
            row[tag] = number if math.isfinite(number) else str(number)
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **row}) + "\n")

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """Log one (3, H, W) image with values in [0, 1]."""
        self.tb.add_image(tag, image.detach().float().cpu().clamp(0, 1), step)

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
