#!/usr/bin/env bash
# The statistics pass of ecprune's `ec` analysis on the bundled LeNet-5 and
# small ViT (mnist_cnn.onnx, mnist_vit.onnx; 1000 calibration samples,
# exact reverse mode, K = 10 directions) against the PyTorch peer
# bench/torch_peer_graph.py computing the same statistics on the same ONNX
# graph. First both compute the importances and bias shifts in float64 and
# are compared (largest difference per layer, relative to the layer's
# largest value); then ecprune (`ecbench analyze`: model and data loaded
# before the clock starts) and the peer in float32 (its batched and its
# per-output reverse passes, the faster counts) are timed in alternation,
# REPEATS times each, and the medians compared. Markdown to stdout and
# bench/out/cnn_vit_peer/table.md.
#
#   bench/cnn_vit_peer.sh [SHARED] [REPEATS]
#
# Needs /usr/bin/python3 with torch, onnx and numpy (or $PYTHON). Run it
# on a quiet machine: the ratios are what counts, not the absolute times.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(cd "${1:-$root/../shared}" && pwd)
repeats=${2:-3}
cd "$root"
out=bench/out/cnn_vit_peer
rm -rf "$out"
mkdir -p "$out"
go build -o "$out/ecprune" ./cmd/ecprune
go build -o "$out/ecbench" ./bench/ecbench
py=${PYTHON:-/usr/bin/python3}
data=$shared/data/mnist/calib_x.npy

for name in mnist_cnn mnist_vit; do
	model=$shared/models/$name.onnx
	echo "cnn_vit_peer.sh: $name: same importances (float64)" >&2
	"$out/ecprune" prune "$model" -o "$out/$name-ec.onnx" --calib "$data" --method ec --sparsity 0.5 \
		--ad reverse --scores "$out/$name-scores.npz" -q >/dev/null
	"$py" bench/torch_peer_graph.py "$model" "$data" --dtype float64 --compare "$out/$name-scores.npz" >"$out/$name-compare.json"
	for r in $(seq "$repeats"); do
		echo "cnn_vit_peer.sh: $name: timing, run $r of $repeats" >&2
		"$out/ecbench" analyze -ad reverse "$model" "$data" >>"$out/$name-ecprune.jsonl"
		"$py" bench/torch_peer_graph.py "$model" "$data" --batched yes >>"$out/$name-torch-batched.jsonl"
		"$py" bench/torch_peer_graph.py "$model" "$data" --batched no >>"$out/$name-torch-loop.jsonl"
	done
done

"$py" - "$out" "$repeats" <<'EOF' | tee "$out/table.md"
import json, os, statistics, sys

out, repeats = sys.argv[1], int(sys.argv[2])
def med(f):
    rows = [json.loads(l) for l in open(os.path.join(out, f))]
    return statistics.median(r["seconds"] for r in rows), rows[0]
print("| model | samples | dense layers | max rel. difference ecprune vs torch (float64) | ecprune s | torch fp32 batched s | torch fp32 per-output s | ecprune / best torch |")
print("|---|---|---|---|---|---|---|---|")
for name in ("mnist_cnn", "mnist_vit"):
    cmp = json.load(open(os.path.join(out, name + "-compare.json")))
    e, er = med(name + "-ecprune.jsonl")
    tb, tr = med(name + "-torch-batched.jsonl")
    tl, _ = med(name + "-torch-loop.jsonl")
    print("| %s | %d | %d | %.1e | %.3g | %.3g | %.3g | **%.2f** |" % (
        name, er["samples"], tr["layers"], cmp["compare"]["worst"], e, tb, tl, e / min(tb, tl)))
print()
print("Medians of %d alternating runs; ecprune `ec` analysis in exact reverse mode (float64), "
      "torch %s with %d threads in float32." % (repeats, tr["torch"], tr["threads"]))
EOF
