"""TensorBoard's hparams plugin, written by hand from its protos (``torch.utils.tensorboard``'s ``add_hparams``
writes into an extra sub-run folder, logs booleans as numbers and always marks a session successful).

A run's own event file gets a session start (its hparams, its study cell as the group) and, when it ends, a session
end (success, or failure for a diverged or failed run, so that the HPARAMS tab can filter them). The experiment (the
hparams with their domains and the metric tags) goes into the run's file for a single run, or once into the study
folder for a sweep, with the union of every run's keys. Metrics are ordinary scalar tags logged over time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import struct_pb2
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

HParam = bool | int | float | str


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def _value(value: HParam) -> struct_pb2.Value:
    if isinstance(value, bool):  # before int: bool is an int in Python, but not in the HPARAMS tab
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, (int, float)):
        return struct_pb2.Value(number_value=float(value))
    return struct_pb2.Value(string_value=str(value))


def _data_type(values: Iterable[HParam]) -> int:
    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in values}
    if kinds == {bool}:
        return api_pb2.DATA_TYPE_BOOL
    if kinds == {float}:
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def experiment_summary(
    domains: Mapping[str, list[HParam]], metrics: Iterable[str], description: str = "", discrete: bool = True
) -> Summary:
    """The experiment: every hparam with the values it takes (with ``discrete``, a discrete domain for strings and
    booleans, and for numbers taking a few values) and the metric tags the HPARAMS tab shows as columns."""
    infos = []
    for name, values in domains.items():
        kind = _data_type(values)
        if kind == api_pb2.DATA_TYPE_STRING:
            values = [str(v) for v in values]
        distinct = list(dict.fromkeys(values))
        info = api_pb2.HParamInfo(name=name, type=kind)
        if discrete and (kind != api_pb2.DATA_TYPE_FLOAT64 or len(distinct) <= 16):
            for value in sorted(distinct, key=lambda v: (str(type(v)), v)):
                info.domain_discrete.values.add().CopyFrom(_value(value))
        infos.append(info)
    experiment = api_pb2.Experiment(
        description=description,
        time_created_secs=time.time(),
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metrics],
    )
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def session_start_summary(hparams: Mapping[str, HParam], group: str = "") -> Summary:
    """A session start: this run's hparam values; ``group`` joins the seeds of one study cell in one row group."""
    info = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=time.time())
    for name, value in hparams.items():
        info.hparams[name].CopyFrom(_value(value))
    return _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info))


def session_end_summary(success: bool) -> Summary:
    """A session end: success, or failure (diverged or failed)."""
    status = api_pb2.STATUS_SUCCESS if success else api_pb2.STATUS_FAILURE
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info))


def hparam_value(value: Any) -> HParam:
    """A config value as an hparam: booleans, numbers and strings as they are; anything else as compact text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)
