"""Reading a run's TensorBoard event files the way TensorBoard's data provider does (plugin tensors, legacy values
migrated), with the small interface the tests need: scalars and images of a tag, every tag, its description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util import tensor_util


@dataclass(frozen=True)
class ScalarEvent:
    step: int
    value: float


@dataclass(frozen=True)
class ImageEvent:
    step: int
    width: int
    height: int
    png: bytes


class Events:
    """All event files directly in ``folder`` (a run folder), read once."""

    def __init__(self, folder: str | Path) -> None:
        self.acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
        self.acc.Reload()

    def tags(self, plugin: str | None = None) -> set[str]:
        """Every tag (of ``plugin``: "scalars", "images", "text", ...)."""
        if plugin is not None:
            return set(self.acc.PluginTagToContent(plugin)) if plugin in self.acc.ActivePlugins() else set()
        return {tag for name in self.acc.ActivePlugins() for tag in self.acc.PluginTagToContent(name)}

    def description(self, tag: str) -> str:
        return self.acc.SummaryMetadata(tag).summary_description

    def Scalars(self, tag: str) -> list[ScalarEvent]:  # noqa: N802 - the name of EventAccumulator's method
        return [ScalarEvent(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in self.acc.Tensors(tag)]

    def Images(self, tag: str) -> list[ImageEvent]:  # noqa: N802 - the name of EventAccumulator's method
        out = []
        for e in self.acc.Tensors(tag):
            width, height, png = tensor_util.make_ndarray(e.tensor_proto)[:3]
            out.append(ImageEvent(e.step, int(width), int(height), bytes(png)))
        return out
