"""Import smoke test run by `make setup`.

`pip check` passes on combinations that still fail at import time (pyarrow 22+
refuses numpy 1.x), so every heavy dependency is imported once here.
"""

import importlib
import sys

MODULES = [
    "numpy",
    "pandas",
    "polars",
    "pyarrow",
    "sklearn",
    "skops.io",
    "skl2onnx",
    "onnxruntime",
    "torch",
    "google.protobuf",
    "grpc",
    "grpc_health.v1.health",
    "tritonclient.grpc",
    "nats",
    "pytriton",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "pydantic_settings",
    "matplotlib",
    "lepton_core",
    "lepton_ml",
    "lepton_platform",
    "lepton.events.v1.events_pb2",
]

failed = []
for name in MODULES:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
if failed:
    print("import smoke test failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    sys.exit(1)
print(f"import smoke test: {len(MODULES)} modules import")
