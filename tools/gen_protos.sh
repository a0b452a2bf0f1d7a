#!/usr/bin/env bash
# Generates the protobuf/gRPC Python code and typing stubs into $1 (default: the
# lepton-proto package). One pinned toolchain (grpcio-tools + mypy-protobuf from
# requirements/lock.txt) so `make check` can regenerate and compare byte for byte.
set -euo pipefail
out="${1:-libs/lepton-proto/src}"
py="${PYTHON:-.venv/bin/python}"
rm -rf "$out/lepton"
mkdir -p "$out"
mapfile -t files < <(cd protos && find lepton -name '*.proto' | sort)
"$py" -m grpc_tools.protoc -I protos \
  --plugin=protoc-gen-mypy="$(dirname "$py")/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$py")/protoc-gen-mypy_grpc" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "${files[@]/#/protos/}"
# Regular packages (not namespace ones) keep mypy and setuptools simple.
find "$out/lepton" -type d -exec touch {}/__init__.py \;
touch "$out/lepton/py.typed"
