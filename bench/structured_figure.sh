#!/usr/bin/env bash
# The figures of docs/structured-results.md: test loss in ONNX Runtime
# against the share of removable units removed, for ec+ and the unit
# baselines; LeNet-300-100's hidden units (docs/structured-loss.svg) or the
# bundled ViT's FFN units and attention heads (docs/structured-loss-vit.svg).
#
#   bash bench/structured_figure.sh [SHARED] [mlp|vit]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(cd "${1:-$root/../shared}" && pwd)
cd "$root"
which=${2:-mlp}
case "$which" in
mlp) name=mnist_mlp_gemm svg=docs/structured-loss.svg title="LeNet-300-100: structured pruning of hidden units" ;;
vit) name=mnist_vit svg=docs/structured-loss-vit.svg title="ViT: structured pruning of FFN units and attention heads" ;;
*) echo "structured_figure.sh: unknown model set $which (mlp or vit)" >&2; exit 2 ;;
esac
out=bench/out/structured/figure-$which
rm -rf "$out"
mkdir -p "$out"
go build -o "$out/ecprune" ./cmd/ecprune
go build -o "$out/orteval" ./testmodels/ort/orteval
: "${ECPRUNE_ORT_LIB:=$(bash scripts/setup-deps.sh --print-ort-lib)}"
export ECPRUNE_ORT_LIB
data=$shared/data/mnist
model=$shared/models/$name.onnx
for s in 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8; do
	for m in ec+ magnitude wanda random; do
		"$out/ecprune" prune "$model" -o "$out/${m}_s$s.onnx" --calib "$data/calib_x.npy" --labels "$data/calib_y.npy" \
			--granularity neuron --sparsity "$s" --method "$m" -q --progress never >/dev/null
	done
	"$out/ecprune" prune "$model" -o "$out/ec+mean_s$s.onnx" --calib "$data/calib_x.npy" --labels "$data/calib_y.npy" \
		--granularity neuron --sparsity "$s" --method ec+ --reconstruct=false -q --progress never >/dev/null
done
"$out/orteval" --data "$data/test_x.npy" --labels "$data/test_y.npy" "$model" "$out"/*.onnx >"$out/results.jsonl"
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" - "$out/results.jsonl" "$svg" "$title" <<'PY'
# A plain SVG line chart (no plotting library needed): test loss, log
# scale, against the share of units removed.
import json, math, os, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
dense = rows[0]["loss"]
series = {}
for r in rows[1:]:
    m = re.match(r"(.+)_s([0-9.]+)\.onnx$", os.path.basename(r["model"]))
    series.setdefault(m.group(1), []).append((float(m.group(2)), r["loss"]))
W, H, L, R, T, B = 640, 420, 70, 150, 40, 50
lo, hi = math.log10(0.15), math.log10(3)
x = lambda s: L + (s - 0.1) / 0.7 * (W - L - R)
y = lambda v: T + (hi - math.log10(v)) / (hi - lo) * (H - T - B)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{(L+W-R)/2}" y="22" font-size="14" text-anchor="middle">{sys.argv[3]}</text>']
for v in [0.2, 0.3, 0.5, 1, 2, 3]:
    out.append(f'<line x1="{L}" x2="{W-R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/><text x="{L-8}" y="{y(v)+4:.1f}" text-anchor="end">{v}</text>')
for s in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]:
    out.append(f'<line x1="{x(s):.1f}" x2="{x(s):.1f}" y1="{T}" y2="{H-B}" stroke="#eee"/><text x="{x(s):.1f}" y="{H-B+16}" text-anchor="middle">{int(s*100)}%</text>')
out.append(f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">removable units removed</text>')
out.append(f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">test cross-entropy in ONNX Runtime (log)</text>')
out.append(f'<line x1="{L}" x2="{W-R}" y1="{y(dense):.1f}" y2="{y(dense):.1f}" stroke="gray" stroke-dasharray="5,4"/>')
colors = {"ec+": "#d62728", "ec+mean": "#ff9896", "magnitude": "#1f77b4", "wanda": "#2ca02c", "random": "#7f7f7f"}
for k, name in enumerate(["ec+", "ec+mean", "magnitude", "wanda", "random"]):
    pts = sorted(series[name])
    c, w = colors[name], 3 if name == "ec+" else 1.5
    out.append(f'<polyline fill="none" stroke="{c}" stroke-width="{w}" points="' + " ".join(f"{x(s):.1f},{y(min(max(v,0.15),3)):.1f}" for s, v in pts) + '"/>')
    for s, v in pts:
        out.append(f'<circle cx="{x(s):.1f}" cy="{y(min(max(v,0.15),3)):.1f}" r="3" fill="{c}"/>')
    out.append(f'<line x1="{W-R+15}" x2="{W-R+40}" y1="{T+20+18*k}" y2="{T+20+18*k}" stroke="{c}" stroke-width="{w}"/><text x="{W-R+46}" y="{T+24+18*k}">{name}</text>')
out.append(f'<line x1="{W-R+15}" x2="{W-R+40}" y1="{T+20+18*5}" y2="{T+20+18*5}" stroke="gray" stroke-dasharray="5,4"/><text x="{W-R+46}" y="{T+24+18*5}">dense</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
