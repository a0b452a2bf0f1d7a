"""A minimal OTLP/gRPC trace receiver.

``make demo`` and the end-to-end tests point every service's OTLP exporter here, so
they can show (and assert) which services reported spans for one trace, with no
collector to install. It speaks the real OTLP protocol; any OpenTelemetry
collector can take its place.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from lepton_platform.processes import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "unknown")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            service=service,
                        )
                    )
        with self.lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class TraceSink:
    """Receives spans over OTLP/gRPC on a free loopback port."""

    def __init__(self) -> None:
        self._receiver = _Receiver()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._receiver, self._server)
        self.port = free_port()
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._receiver.lock:
            return [s for s in self._receiver.spans if trace_id is None or s.trace_id == trace_id]

    def services(self, trace_id: str) -> set[str]:
        return {s.service for s in self.spans(trace_id)}

    def stop(self) -> None:
        self._server.stop(1).wait()
