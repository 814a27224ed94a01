#!/usr/bin/env bash
# Reproduces the README's result tables. For each bundled model it prunes
# with every criterion at 50, 70, 80, 90 and 95% sparsity, ranking weights
# globally and per layer (`ecprune sweep --save-dir`, statistics from the
# calibration split), then measures every pruned file in ONNX Runtime on
# the test split (testmodels/ort/orteval), so the tables show what a
# deployment would see. Markdown tables go to stdout and to
# bench/out/experiments/tables.md.
#
#   scripts/experiments.sh [SHARED]
#
# SHARED holds models/ and data/ (default ../shared). Needs ONNX Runtime
# (scripts/setup-deps.sh installs it into .ci/ort). A few minutes on 2
# cores.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(cd "${1:-$root/../shared}" && pwd)
cd "$root"
out=bench/out/experiments
rm -rf "$out"
mkdir -p "$out"
go build -o "$out/ecprune" ./cmd/ecprune
go build -o "$out/orteval" ./testmodels/ort/orteval
: "${ECPRUNE_ORT_LIB:=$(bash scripts/setup-deps.sh --print-ort-lib)}"
export ECPRUNE_ORT_LIB

sparsities=0.5,0.7,0.8,0.9,0.95
run() { # NAME MODEL DATA METHODS
	local name=$1 model=$2 data=$3 methods=$4
	for scope in global layer; do
		echo "experiments.sh: $name, $scope ranking" >&2
		"$out/ecprune" sweep "$model" --calib "$data/calib_x.npy" --labels "$data/calib_y.npy" \
			--test "$data/test_x.npy" --test-labels "$data/test_y.npy" \
			--methods "$methods" --sparsities "$sparsities" --scope "$scope" \
			--save-dir "$out/$name-$scope" --json="$out/$name-$scope.json" --progress never -q >/dev/null
		{
			echo
			echo "### $name, $scope ranking: test loss measured in ONNX Runtime"
			echo
			"$out/orteval" --table --data "$data/test_x.npy" --labels "$data/test_y.npy" "$model" "$out/$name-$scope"/*.onnx
		} | tee -a "$out/tables.md"
	done
}
run mnist "$shared/models/mnist_mlp_gemm.onnx" "$shared/data/mnist" ec+,sparsegpt,sparsegpt+bias,ec,ec-nocomp,wanda,magnitude,taylor,gradient,random
run pde "$shared/models/pde_mlp.onnx" "$shared/data/pde" ec+,sparsegpt,sparsegpt+bias,ec,exact,ec-nocomp,wanda,magnitude,taylor,gradient,random
