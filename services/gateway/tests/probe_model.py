"""A Triton Python-backend model for the gateway's tests: doubles ``x`` and says what reached it.

Its ``info`` output tells, per row, which Triton model answered, whether the request carried
the inference secret (compared here, never echoed) and the ``traceparent`` it was given.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        path = os.environ.get("LEPTON_TRITON_INFERENCE_SECRET_FILE", "")
        with open(path, encoding="utf-8") as f:
            self.secret = f.read().strip()

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            params = json.loads(request.parameters() or "{}")
            info = {
                "model": self.name,
                "secret_ok": params.get("lepton-inference-secret") == self.secret,
                "traceparent": params.get("traceparent", ""),
            }
            text = np.array([[json.dumps(info).encode()]] * len(x), dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * 2), pb_utils.Tensor("info", text)]))
        return responses
