#!/usr/bin/env bash
# Benchmark harness of ecprune: builds the pure-Go and OpenBLAS binaries,
# generates the benchmark models and data, runs ecprune and the PyTorch
# peer, and prints the tables (also written to bench/out/results.md).
#
#   bash bench/run.sh [SHARED] [ecbench run flags...]
#
# SHARED is the shared folder with models/ and data/ (default ../shared);
# where it lacks a file, testdata/ copies are used. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${1:-../shared}
shift || true
BIN=bench/out/bin
mkdir -p "$BIN"

echo "building the pure-Go (default) binaries..." >&2
go build -o "$BIN/ecprune" ./cmd/ecprune
go build -o "$BIN/ecbench" ./bench/ecbench

# The OpenBLAS build needs cgo and Debian's libopenblas-dev.
rm -f "$BIN/ecprune_openblas" "$BIN/ecbench_openblas"
if [ "$(go env CGO_ENABLED)" = 1 ] && { [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || ldconfig -p 2>/dev/null | grep -q libopenblas.so; }; then
	echo "building the OpenBLAS binaries (-tags openblas)..." >&2
	CGO_LDFLAGS=-lopenblas go build -tags openblas -o "$BIN/ecprune_openblas" ./cmd/ecprune
	CGO_LDFLAGS=-lopenblas go build -tags openblas -o "$BIN/ecbench_openblas" ./bench/ecbench
else
	echo "no OpenBLAS (apt-get install -y libopenblas-dev): pure-Go build only" >&2
fi

if ! /usr/bin/python3 -c 'import torch, onnx, numpy' 2>/dev/null; then
	echo "no PyTorch peer: /usr/bin/python3 lacks torch/onnx/numpy (apt-get install -y python3-torch python3-onnx)" >&2
fi

exec "$BIN/ecbench" run -shared "$SHARED" -bin "$BIN" -work bench/out "$@"
