"""The edge bundle: a checked conversion packed to run without Lepton.

:func:`export_edge_bundle` zips the ONNX graph, its signature and check numbers, the
standalone runner (:mod:`lepton_ml.onnx_export.edge_runner`, copied in as ``runner.py``
from its source file) and a Triton model repository, for devices that run neither
polars nor Lepton.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from importlib import resources
from typing import Any, Final

import numpy as np
import onnx
import polars as pl
from onnx import TensorProto

from lepton_ml import artifacts
from lepton_ml.onnx_export._conversion import Conversion, ConversionRefused, as_bundle, convert
from lepton_ml.onnx_export._graph import NP_OF

EDGE_FORMAT: Final = "lepton-edge"
EDGE_FORMAT_VERSION: Final = 1
TRITON_MAX_BATCH_SIZE: Final = 64
TRITON_MAX_QUEUE_DELAY_US: Final = 200
#: The file of the package the bundle's ``runner.py`` is copied from.
RUNNER_FILE: Final = "edge_runner.py"
#: ``runner.py`` of an edge bundle: standalone, numpy and onnxruntime only. Read from
#: :mod:`lepton_ml.onnx_export.edge_runner`'s source, so the bundle ships the very
#: module that ruff, mypy and the tests check.
RUNNER_SOURCE: Final = resources.files("lepton_ml.onnx_export").joinpath(RUNNER_FILE).read_text(encoding="utf-8")
_TRITON_TYPE: Final[dict[int, str]] = {TensorProto.DOUBLE: "TYPE_FP64", TensorProto.FLOAT: "TYPE_FP32"}


def triton_config(conversion: Conversion, name: str, *, max_batch_size: int = TRITON_MAX_BATCH_SIZE) -> str:
    """The Triton ``config.pbtxt`` for a conversion: onnxruntime platform, dynamic batching.

    No ``instance_group`` is set, so Triton places one instance on each GPU when there is
    one (a Jetson's included) and on the CPU otherwise.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    proto = onnx.load_from_string(conversion.onnx)
    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    for value, target in ((proto.graph.input, config.input), (proto.graph.output, config.output)):
        for tensor in value:
            dims = [d.dim_value for d in tensor.type.tensor_type.shape.dim[1:]]
            data_type = mc.DataType.Value(_TRITON_TYPE[tensor.type.tensor_type.elem_type])
            target.add(name=tensor.name, data_type=data_type, dims=dims)
    config.dynamic_batching.max_queue_delay_microseconds = TRITON_MAX_QUEUE_DELAY_US
    text: str = text_format.MessageToString(config)
    return text


def _edge_signature(conversion: Conversion, bundle: artifacts.Bundle) -> dict[str, Any]:
    proto = onnx.load_from_string(conversion.onnx)
    outputs = [
        {
            "name": o.name,
            "dtype": np.dtype(NP_OF[o.type.tensor_type.elem_type]).name,
            "shape": [-1, *[d.dim_value for d in o.type.tensor_type.shape.dim[1:]]],
        }
        for o in proto.graph.output
    ]
    return {
        "format": EDGE_FORMAT,
        "format_version": EDGE_FORMAT_VERSION,
        "task": conversion.task,
        "input": {
            "name": conversion.input_name,
            "dtype": conversion.input_dtype,
            "shape": list(conversion.input_shape),
            "columns": conversion.input_columns,
            "missing": "NaN",
        },
        "outputs": outputs,
        "classes": conversion.classes,
        "preprocessing_folded": conversion.folded_steps,
        "signature": asdict(bundle.signature),
    }


def export_edge_bundle(
    artifact: artifacts.Bundle,
    sample: pl.DataFrame | None = None,
    *,
    name: str = "",
    max_batch_size: int = TRITON_MAX_BATCH_SIZE,
) -> bytes:
    """A zip to run the model without Lepton: ONNX, signature, check numbers, runner, Triton repo.

    Contents: ``model.onnx`` (preprocessing folded in), ``signature.json`` (input
    columns in order, dtypes, outputs, classes, the original signature), ``check.json``
    (:meth:`Conversion.report`), ``runner.py`` (numpy and onnxruntime only:
    ``python runner.py <unzipped dir> input.csv`` prints one JSON object per row) and
    ``triton/<name>/config.pbtxt`` with ``triton/<name>/1/model.onnx``, a model
    repository Triton loads as is.

    Args:
        artifact: The bundle (loaded from a verified artifact).
        sample: Rows to check on, as for :func:`convert`.
        name: The Triton model name; by default ``<algorithm>-<target>`` of the signature.
        max_batch_size: Triton's ``max_batch_size``.

    Returns:
        The zip's bytes (fixed timestamps: the same inputs give the same bytes).

    Raises:
        ConversionRefused: The conversion is not exact (a ValueError too); the message
            says why.
    """
    bundle = as_bundle(artifact)
    conversion = convert(bundle, sample)
    if not conversion.ok:
        raise ConversionRefused(conversion)
    signature = bundle.signature
    model_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or f"{signature.algorithm}-{signature.target}").strip("-.")
    files = [
        ("model.onnx", conversion.onnx),
        ("signature.json", json.dumps(_edge_signature(conversion, bundle), indent=1, sort_keys=True).encode()),
        ("check.json", json.dumps(conversion.report(), indent=1, sort_keys=True).encode()),
        ("runner.py", RUNNER_SOURCE.encode()),
        (
            f"triton/{model_name}/config.pbtxt",
            triton_config(conversion, model_name, max_batch_size=max_batch_size).encode(),
        ),
        (f"triton/{model_name}/1/model.onnx", conversion.onnx),
    ]
    return artifacts._zip(files)
