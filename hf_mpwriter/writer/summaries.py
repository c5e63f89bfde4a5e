"""Summaries that tensorboardX's own functions do not build (or read back) the way this writer needs.

``SummaryWriter`` is a drop-in for tensorboardX's and ``torch.utils.tensorboard``'s writers, and
tensorboardX alone knows neither torch's ``add_hparams`` call (:func:`hparams_call` tells the two
signatures apart) and ``hparam_domain_discrete`` nor torch's ``new_style`` / ``double_precision``
scalars: they are built here, as torch builds them. ``export_scalars_to_json`` needs the
``add_scalars`` values, which tensorboardX keeps in memory (without bound) and this writer does not:
:func:`scalars_json` reads them back from the event files.
"""

from __future__ import annotations

from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboardX.proto.tensor_pb2 import TensorProto

from ..events.records import iter_records
from .values import describe


def hparams_call(args: tuple, kwargs: dict) -> tuple[dict | None, str | None, int | None]:
    """``(hparam_domain_discrete, run name, global_step)`` from either library's ``add_hparams`` call.

    tensorboardX: ``(hparam_dict, metric_dict, name=None, global_step=None)``; torch:
    ``(hparam_dict, metric_dict, hparam_domain_discrete=None, run_name=None, global_step=None)``.
    A dict in third place is torch's domain, a str tensorboardX's name.
    """
    if len(args) > 3:
        raise TypeError(f"add_hparams() takes at most 5 positional arguments ({len(args) + 2} given)")
    third = args[0] if args else None
    torch_order = isinstance(third, dict) or len(args) == 3 or (len(args) == 2 and isinstance(args[1], str))
    if third is not None and not isinstance(third, (dict, str)):
        raise TypeError(f"add_hparams(): third argument must be a dict (hparam_domain_discrete) or a str (name), "
                        f"got {describe(third)}")
    names = ("hparam_domain_discrete", "run_name", "global_step") if torch_order else ("name", "global_step")
    given = dict(zip(names, args))
    for key, value in kwargs.items():
        if key in given and value is not None:
            raise TypeError(f"add_hparams() got multiple values for argument {key!r}")
        if value is not None or key not in given:
            given[key] = value
    domain, run_name, name = given.get("hparam_domain_discrete"), given.get("run_name"), given.get("name")
    if run_name and name and run_name != name:
        raise TypeError(f"add_hparams(): name={name!r} and run_name={run_name!r} disagree; pass one of them")
    return domain, run_name or name, given.get("global_step")


def domain_discrete(exp: Summary, hparam_dict: dict, domain: dict | None) -> Summary:
    """tensorboardX's experiment summary with torch's ``hparam_domain_discrete`` (same checks as torch)."""
    if not domain:
        return exp
    if not isinstance(domain, dict):
        raise TypeError("parameter: hparam_domain_discrete should be a dictionary, nothing logged.")
    for key, values in domain.items():
        if key not in hparam_dict or not isinstance(values, list) or not all(
            isinstance(v, type(hparam_dict[key])) for v in values
        ):
            raise TypeError(
                f"parameter: hparam_domain_discrete[{key}] should be a list of same type as hparam_dict[{key}]."
            )
    from google.protobuf import struct_pb2
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    metadata = exp.value[0].metadata
    data = HParamsPluginData.FromString(metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        if info.name not in domain:
            continue
        values = []
        for v in domain[info.name]:
            if isinstance(v, bool):
                values.append(struct_pb2.Value(bool_value=v))
            elif isinstance(v, str):
                values.append(struct_pb2.Value(string_value=v))
            else:
                values.append(struct_pb2.Value(number_value=v))
        info.domain_discrete.CopyFrom(struct_pb2.ListValue(values=values))
    metadata.plugin_data.content = data.SerializeToString()
    return exp


def scalars_json(files_by_key: dict, marks: dict) -> dict:
    """``{key: [[wall_time, step, value], ...]}`` of the scalars in each key's event files past ``marks``.

    ``marks`` (``{file: offset}``) is updated to where this read ended: tensorboardX forgets what it
    exported, so the next export has only what was logged after it.
    """
    out: dict = {}
    for key, files in files_by_key.items():
        points = out.setdefault(key, [])
        for path in files:
            start = marks.get(path, 0)
            try:
                with open(path, "rb") as stream:
                    for end, data in iter_records(stream, start):
                        points.extend(_scalar_points(data))
                        marks[path] = end
            except FileNotFoundError:  # removed by the user: nothing to read
                continue
        if not points:
            del out[key]
    return out


def _scalar_points(data: bytes) -> list:
    event = Event.FromString(data)
    if not event.HasField("summary"):
        return []
    return [[event.wall_time, event.step, v.simple_value]
            for v in event.summary.value if v.WhichOneof("value") == "simple_value"]


def tensor_scalar(tag: str, value: float, new_style: bool, double_precision: bool) -> Summary:
    """``torch.utils.tensorboard``'s ``new_style`` / ``double_precision`` scalar summary."""
    if double_precision:
        tensor = TensorProto(dtype="DT_DOUBLE", double_val=[value])
    else:
        tensor = TensorProto(dtype="DT_FLOAT", float_val=[value])
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
    return Summary(value=[Summary.Value(tag=tag, tensor=tensor, metadata=metadata)])
