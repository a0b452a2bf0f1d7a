"""The floor of ``bench/serve_bench.py``: a plain grpcio KServe V2 server with no model.

It implements ``ModelInfer`` (and the liveness/readiness calls) from the service
definitions tritonclient ships (``tritonclient.grpc.service_pb2_grpc``), so the very
client code the benchmark points at Triton and MLServer works against it unchanged.
Every ``ModelInfer`` returns one prebuilt response: output ``prediction``, FP64,
shape ``[1, 1]``, whatever the request holds. What remains is the cost of gRPC, protobuf
and a Python servicer: no model, no batching, no queue.

Run as its own process (so it never shares the benchmark client's GIL)::

    python bench/serving/echo_server.py --port 50123
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

OUTPUT = "prediction"


class EchoInference(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers every inference with the same fixed ``[1, 1]`` FP64 tensor."""

    def __init__(self) -> None:
        self._response = service_pb2.ModelInferResponse(
            model_name="echo",
            model_version="1",
            outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name=OUTPUT, datatype="FP64", shape=[1, 1])],
            raw_output_contents=[np.zeros((1, 1), dtype=np.float64).tobytes()],
        )

    def ServerLive(self, request: Any, context: Any) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> service_pb2.ModelReadyResponse:
        return service_pb2.ModelReadyResponse(ready=True)

    def ModelInfer(self, request: Any, context: Any) -> service_pb2.ModelInferResponse:
        return self._response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=16, help="server thread pool size")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(EchoInference(), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
