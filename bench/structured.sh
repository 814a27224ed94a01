#!/usr/bin/env bash
# Structured pruning (prune --granularity neuron) on LeNet-300-100, on
# wide tanh, deep tanh and BatchNorm MLPs and a post-norm transformer
# encoder (and a bigger one, transformer_big) trained by
# bench/structured_models.py, and on the bundled ViT
# (FFN units and attention heads): for each model, method and share S of
# the removable units, the test loss measured in ONNX Runtime on the 2000
# test digits (testmodels/ort/orteval), the file size, and ORT latency
# (batch 256, one thread, median of timed runs,
# bench/structured_latency.js) of the dense and the ec+-pruned models.
# The attention models are also pruned with --scope layer (every FFN and
# every attention block loses S of its units, so heads go too), as
# METHOD-layer. Tables go to stdout and to bench/out/structured/tables.md.
#
#   [MODELS="vit transformer"] [METHODS="ec+ magnitude wanda"] bash bench/structured.sh [SHARED]
#
# SHARED holds models/ and data/ (default ../shared). Needs ONNX Runtime
# (scripts/setup-deps.sh installs it into .ci/ort), node, and python3 with
# torch and onnx for the extra models. About 1.5 minutes on 2 cores for
# the MLPs, 10 more for the two attention models.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(cd "${1:-$root/../shared}" && pwd)
cd "$root"
out=bench/out/structured
mkdir -p "$out"
rm -f "$out/tables.md"
go build -o "$out/ecprune" ./cmd/ecprune
go build -o "$out/orteval" ./testmodels/ort/orteval
: "${ECPRUNE_ORT_LIB:=$(bash scripts/setup-deps.sh --print-ort-lib)}"
export ECPRUNE_ORT_LIB
: "${ORT_NODE_MODULES:=$root/.ci/ort/node_modules}"
data=$shared/data/mnist
py=/usr/bin/python3
[ -x "$py" ] || py=python3
models=${MODELS:-mlp_gemm wide_tanh deep_tanh bn vit transformer transformer_big}
for m in wide_tanh deep_tanh bn; do
	case " $models " in *" $m "*) [ -f "$out/mnist_$m.onnx" ] || "$py" bench/structured_models.py "$data" "$out" 2>/dev/null ;; esac
done
for m in transformer transformer_big; do
	case " $models " in *" $m "*) [ -f "$out/mnist_$m.onnx" ] || "$py" bench/structured_models.py "$data" "$out" $m 2>/dev/null ;; esac
done

sparsities="0.3 0.5"
methods=${METHODS:-ec+ ec magnitude wanda random}
for name in $models; do
	model=$out/mnist_$name.onnx
	attention=
	case $name in
	mlp_gemm | vit) model=$shared/models/mnist_$name.onnx ;;
	esac
	case $name in vit | transformer*) attention=1 ;; esac
	dir=$out/$name
	rm -rf "$dir"
	mkdir -p "$dir"
	for s in $sparsities; do
		for m in $methods; do
			"$out/ecprune" prune "$model" -o "$dir/${m}_s$s.onnx" --calib "$data/calib_x.npy" --labels "$data/calib_y.npy" \
				--granularity neuron --sparsity "$s" --method "$m" --report "$dir/${m}_s$s.json" -q --progress never >/dev/null
		done
		if [ -n "$attention" ]; then
			# Every block loses S of its units: heads go as well as FFN units.
			for m in ec+ magnitude wanda; do
				case " $methods " in *" $m "*) ;; *) continue ;; esac
				"$out/ecprune" prune "$model" -o "$dir/${m}-layer_s$s.onnx" --calib "$data/calib_x.npy" --labels "$data/calib_y.npy" \
					--granularity neuron --sparsity "$s" --scope layer --method "$m" --report "$dir/${m}-layer_s$s.json" -q --progress never >/dev/null
			done
			continue
		fi
		# ec+ with mean substitution only (no least-squares reconstruction).
		"$out/ecprune" prune "$model" -o "$dir/ec+mean_s$s.onnx" --calib "$data/calib_x.npy" --labels "$data/calib_y.npy" \
			--granularity neuron --sparsity "$s" --method ec+ --reconstruct=false -q --progress never >/dev/null
	done
	{
		echo
		echo "### $name: test loss (accuracy) in ONNX Runtime, share of removable units removed"
		echo
		"$out/orteval" --table --data "$data/test_x.npy" --labels "$data/test_y.npy" "$model" "$dir"/*.onnx
		echo
		echo "### $name: size and ONNX Runtime latency (batch 256, 1 thread, median [IQR] of 200 runs)"
		echo
		echo "| model | file bytes | ratio | parameters | dense multiply-adds | latency ms | ratio |"
		echo "|---|---|---|---|---|---|---|"
		files=("$model")
		for s in $sparsities; do files+=("$dir/ec+_s$s.onnx"); done
		[ -n "$attention" ] && for s in $sparsities; do files+=("$dir/ec+-layer_s$s.onnx"); done
		NODE_PATH=$ORT_NODE_MODULES node bench/structured_latency.js 256 200 "${files[@]}" >"$dir/latency.jsonl"
		"$py" - "$dir" "$model" "${attention:-0}" $sparsities <<'PY'
import json, os, sys
d, model, attention, ss = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
lat = {os.path.basename(j["model"]): j for j in map(json.loads, open(f"{d}/latency.jsonl"))}
base = os.path.getsize(model)
b = lat[os.path.basename(model)]
r0 = json.load(open(f"{d}/ec+_s{ss[0]}.json"))
print(f"| dense | {base} | 1 | {r0['before']['params']} | {r0['before']['dense_macs']} | {b['median_ms']:.3f} [{b['q1_ms']:.3f}-{b['q3_ms']:.3f}] | 1 |")
for m in ["ec+", "ec+-layer"] if attention else ["ec+"]:
    for s in ss:
        f = f"{m}_s{s}.onnx"
        r = json.load(open(f"{d}/{m}_s{s}.json"))
        l = lat[f]
        size = os.path.getsize(f"{d}/{f}")
        heads = "".join(f", {g['kept_heads']}/{g['heads']} heads" for g in r["groups"] if g.get("heads"))
        print(f"| {m} {float(s):.0%}{heads} | {size} | {size/base:.3f} | {r['after']['params']} | {r['after']['dense_macs']} | "
              f"{l['median_ms']:.3f} [{l['q1_ms']:.3f}-{l['q3_ms']:.3f}] | {l['median_ms']/b['median_ms']:.3f} |")
PY
	} | tee -a "$out/tables.md"
done
