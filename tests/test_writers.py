"""The run writer: TensorBoard events plus a JSON-lines copy of every scalar."""

import json

import torch

from gan.writers import RunWriter
from tests.events import Events


def test_scalars_and_images_reach_both_outputs(tmp_path):
    writer = RunWriter(tmp_path)
    writer.scalars({"loss/D/adv": torch.tensor(1.5), "lr/G": 1e-4, "bad": float("nan")}, step=3)
    writer.image("images/translations", torch.rand(3, 8, 12), step=3)
    writer.close()
    rows = [json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 3 and rows[0]["loss/D/adv"] == 1.5 and rows[0]["lr/G"] == 1e-4 and rows[0]["bad"] == "nan"
    acc = Events(tmp_path)
    assert acc.Scalars("loss/D/adv")[0].value == 1.5
    image = acc.Images("images/translations")[0]
    assert (image.width, image.height, image.step) == (12, 8, 3)


def test_purge_step_drops_the_lost_tail(tmp_path):
    first = RunWriter(tmp_path)
    for step in range(1, 7):
        first.scalars({"x": float(step)}, step)
    first.close()
    resumed = RunWriter(tmp_path, purge_step=4)
    resumed.scalars({"x": 40.0}, 4)
    resumed.close()
    acc = Events(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("x")] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_descriptions_reach_tensorboard_once_per_tag(tmp_path):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PluginAccumulator

    w = RunWriter(tmp_path)
    about = {"eval/fid/mean": "FID of 64 translations vs 64 real images per target domain"}
    w.scalars({"eval/fid/mean": 300.0, "loss/D/total": 1.0}, 0, about)
    w.scalars({"eval/fid/mean": 250.0}, 10, {"eval/fid/mean": "changed later: ignored by TensorBoard anyway"})
    w.close()
    # What TensorBoard's data provider reads (legacy simple values migrated to the scalars plugin's tensors).
    acc = PluginAccumulator(str(tmp_path))
    acc.Reload()
    described = acc.SummaryMetadata("eval/fid/mean").summary_description
    assert described.startswith(about["eval/fid/mean"] + ".")  # the hook's own text, then how to read a sparse tag
    assert "staircase" in described
    assert acc.SummaryMetadata("eval/fid/mean").plugin_data.plugin_name == "scalars"
    assert acc.SummaryMetadata("loss/D/total").summary_description == ""
    values = [float(torch.tensor(e.tensor_proto.float_val[0])) for e in acc.Tensors("eval/fid/mean")]
    assert values == [300.0, 250.0]  # the described value is an ordinary point of the curve
    rows = [json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines()]
    assert [r.get("eval/fid/mean") for r in rows] == [300.0, 250.0]
