"""The "hand-loaded" Triton model of ``bench/serve_bench.py``: a fitted estimator, nothing else.

What a user writes to serve a scikit-learn estimator on Triton's Python backend without
Lepton: load ``model.skops`` from the version folder (skops, never pickle; only
scikit-learn, numpy and builtin types are trusted), and in ``execute`` predict every
dynamically batched request's rows with one ``predict`` call, then split the result
back per request. No signature, no preprocessing, no validation beyond what numpy
raises, no prediction logging. The benchmark loads it into the platform's own Triton
server with ``load_model(config=..., files=...)``, with the same tensors (``features``
FP64 ``[batch, n]`` in, ``prediction`` FP64 ``[batch, 1]`` out) and the same batching
settings as the platform's deployment, so ours / this isolates Lepton's wrapper.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import skops.io as sio
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found, unused-ignore]

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        path = os.path.join(args["model_repository"], args["model_version"], "model.skops")
        with open(path, "rb") as f:
            data = f.read()
        untrusted = sio.get_untrusted_types(data=data)
        refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
        if refused:
            raise ValueError(f"model.skops holds types this model does not trust: {refused}")
        self.model = sio.loads(data, trusted=untrusted)

    def execute(self, requests: list[Any]) -> list[Any]:
        xs = [pb_utils.get_input_tensor_by_name(r, "features").as_numpy() for r in requests]
        y = np.asarray(self.model.predict(np.concatenate(xs)), dtype=np.float64).reshape(-1, 1)
        responses = []
        start = 0
        for x in xs:
            out = y[start : start + len(x)]
            start += len(x)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("prediction", out)]))
        return responses
