#!/usr/bin/env bash
# Reproduces the CNN and ViT tables of docs/cnn-vit-results.md and the
# README: the bundled LeNet-5 (mnist_cnn.onnx) and small ViT
# (mnist_vit.onnx) pruned with ec+ (the default), ec, wanda, magnitude and
# sparsegpt at 50, 70, 80 and 90% sparsity, weights ranked globally over
# every dense layer, label-free (calibration inputs only: no --labels).
# Every pruned file is then measured in ONNX Runtime on the whole test
# split (testmodels/ort/orteval), so the tables show what a deployment
# would see; the per-layer densities come from `ecprune inspect --json` on
# the same files.
#
#   bench/cnn_vit.sh [SHARED]
#
# SHARED holds models/ and data/ (default ../shared). Needs ONNX Runtime
# (scripts/setup-deps.sh installs it into .ci/ort) and a python3 (standard
# library only) to format the tables. Output: bench/out/cnn_vit/tables.md
# (also on stdout), the sweep JSON and the pruned files beside it. About
# 5 minutes on 2 idle cores, most of it ec+ and sparsegpt on the ViT.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(cd "${1:-$root/../shared}" && pwd)
cd "$root"
out=bench/out/cnn_vit
rm -rf "$out"
mkdir -p "$out"
go build -o "$out/ecprune" ./cmd/ecprune
go build -o "$out/orteval" ./testmodels/ort/orteval
: "${ECPRUNE_ORT_LIB:=$(bash scripts/setup-deps.sh --print-ort-lib)}"
export ECPRUNE_ORT_LIB
py=${PYTHON:-python3}

data=$shared/data/mnist
methods=ec+,ec,wanda,magnitude,sparsegpt
sparsities=0.5,0.7,0.8,0.9
for name in mnist_cnn mnist_vit; do
	model=$shared/models/$name.onnx
	echo "cnn_vit.sh: $name: sweep (global, label-free)" >&2
	# --test-labels only scores the sweep's own evaluation of each point;
	# pruning sees the calibration inputs alone.
	"$out/ecprune" sweep "$model" --calib "$data/calib_x.npy" \
		--test "$data/test_x.npy" --test-labels "$data/test_y.npy" \
		--methods "$methods" --sparsities "$sparsities" --scope global \
		--save-dir "$out/$name" --json="$out/$name.json" --progress never -q >/dev/null
	echo "cnn_vit.sh: $name: ONNX Runtime on the test split" >&2
	"$out/orteval" --data "$data/test_x.npy" --labels "$data/test_y.npy" \
		"$model" "$out/$name"/*.onnx >"$out/$name-ort.jsonl"
	for f in "$out/$name"/*.onnx; do
		"$out/ecprune" inspect --json "$f" >"${f%.onnx}.inspect.json"
	done
done

"$py" - "$out" "$methods" "$sparsities" <<'EOF' | tee "$out/tables.md"
import json, os, sys

out, methods, sparsities = sys.argv[1], sys.argv[2].split(","), [float(s) for s in sys.argv[3].split(",")]
titles = {
    "mnist_cnn": "LeNet-5 (`mnist_cnn.onnx`; Conv/MaxPool trunk, dense 400-120-84-10)",
    "mnist_vit": "small ViT (`mnist_vit.onnx`; patch embedding, 2 pre-norm attention blocks, head)",
}
for name in ("mnist_cnn", "mnist_vit"):
    res = {}
    for line in open(os.path.join(out, name + "-ort.jsonl")):
        r = json.loads(line)
        res[os.path.basename(r["model"])] = r
    dense = res[name + ".onnx"]
    sweep = json.load(open(os.path.join(out, name + ".json")))
    prunable = sweep["points"][0]["prunable"]
    def cell(m, s):
        return res["%s_s%.2f.onnx" % (m, s)]
    print("### %s, global ranking, label-free\n" % titles[name])
    print("%d prunable weights; test cross-entropy (accuracy) in ONNX Runtime on %d test samples; "
          "dense model %.4f (%.1f%%). Best per column in bold.\n"
          % (prunable, dense["samples"], dense["loss"], 100 * dense["accuracy"]))
    print("| method | " + " | ".join("%d%%" % round(100 * s) for s in sparsities) + " |")
    print("|---" * (len(sparsities) + 1) + "|")
    best = {s: min(cell(m, s)["loss"] for m in methods) for s in sparsities}
    for m in methods:
        cells = []
        for s in sparsities:
            r = cell(m, s)
            c = "%.4f (%.1f%%)" % (r["loss"], 100 * r["accuracy"])
            cells.append("**%s**" % c if r["loss"] == best[s] else c)
        label = "**ec+** (default)" if m == "ec+" else m
        print("| %s | %s |" % (label, " | ".join(cells)))
    print()
    # Per-layer densities: where each method puts the surviving weights.
    for s in sparsities:
        layers = None
        rows = []
        for m in methods:
            ins = json.load(open(os.path.join(out, name, "%s_s%.2f.inspect.json" % (m, s))))
            if layers is None:
                layers = [(l["name"], l["out"], l["in"]) for l in ins["layers"]]
            rows.append((m, [l["nonzeros"] / l["params"] for l in ins["layers"]]))
        print("<details><summary>%s: per-layer density at %d%%</summary>\n" % (name, round(100 * s)))
        print("| method | " + " | ".join("%s %dx%d" % l for l in layers) + " |")
        print("|---" * (len(layers) + 1) + "|")
        for m, d in rows:
            print("| %s | %s |" % (m, " | ".join("%.3f" % x for x in d)))
        print("\n</details>\n")
EOF
