#!/usr/bin/env bash
# Regenerates the README figures in docs/: `ecprune sweep` of every method
# over sparsities 10%..95% on the bundled MNIST and PDE models, with the
# full calibration split for the statistics and the test split to evaluate.
#
#   scripts/figures.sh [SHARED]
#
# SHARED is the folder holding models/ and data/ (default: ../shared next
# to the repository). Writes, in docs/:
#   mnist-loss.png mnist-accuracy.png mnist-error.png mnist-size.png
#   pde-loss.png pde-error.png pde-size.png
#   mnist-sweep.csv mnist-sweep.json pde-sweep.csv pde-sweep.json
# The outputs depend only on the code and the data (no timings), so a rerun
# that changes nothing leaves them byte for byte the same.
#
# Environment: METHODS and SPARSITIES override the methods and sparsities
# (as for sweep's --methods and --sparsities).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${1:-../shared}
methods=${METHODS:-ec,ec+,magnitude,wanda,random,gradient,taylor,ec-nocomp}
sparsities=${SPARSITIES:-0.1:0.95:0.05}

cd "$root"
for d in "$shared/models" "$shared/data/mnist" "$shared/data/pde"; do
	if [[ ! -d $d ]]; then
		echo "figures.sh: $d not found; pass the shared folder (with models/ and data/) as the first argument" >&2
		exit 2
	fi
done
mkdir -p docs

# sweep NAME MODEL DATA: one model's figures and tables, docs/NAME-*.
sweep() {
	local name=$1 model=$2 data=$3
	echo "figures.sh: $name: $model" >&2
	go run ./cmd/ecprune sweep "$model" \
		--calib "$data/calib_x.npy" --labels "$data/calib_y.npy" \
		--test "$data/test_x.npy" --test-labels "$data/test_y.npy" \
		--methods "$methods" --sparsities "$sparsities" \
		--csv "docs/$name-sweep.csv" --json="docs/$name-sweep.json" \
		--plot "docs/$name.png" --progress never
	# --plot F.png puts the loss figure in F.png itself.
	mv "docs/$name.png" "docs/$name-loss.png"
}

sweep mnist "$shared/models/mnist_mlp_gemm.onnx" "$shared/data/mnist"
sweep pde "$shared/models/pde_mlp.onnx" "$shared/data/pde"
