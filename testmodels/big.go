package testmodels

import (
	"fmt"
	"strconv"
	"strings"
)

// BigMLP builds torch's nn.Sequential(Linear, ReLU, ..., Linear) with the
// given widths (sizes[0] inputs, sizes[len-1] outputs), exported the way
// the catalogue's MLPs are (Gemm transB=1 + Relu, float32, opset 13,
// weights U(±sqrt(3/in)), biases U(±1/sqrt(in)), seeded by the case name).
// It is not part of the catalogue: it exists for the benchmarks, e.g.
// BigMLP(784, 1024, 1024, 10) or the untrained 42M-parameter
// BigMLP(1024, 4096, 4096, 4096, 1024) (168 MB as a file). Building it
// takes about 10 bytes of memory per parameter.
func BigMLP(sizes ...int64) Case {
	if len(sizes) < 2 {
		panic("testmodels.BigMLP: need at least an input and an output width")
	}
	parts := make([]string, len(sizes))
	for i, s := range sizes {
		if s <= 0 {
			panic(fmt.Sprintf("testmodels.BigMLP: width %d", s))
		}
		parts[i] = strconv.FormatInt(s, 10)
	}
	b := newBuilder("mlp_"+strings.Join(parts, "_"), 13)
	x := b.input("input", sizes[0])
	b.out(mlp(b, x, sizes, relu), sizes[len(sizes)-1])
	layers := len(sizes) - 1
	return finish(b, Case{
		InputShape: []int64{sizes[0]},
		Layers:     layers,
		Prunable:   layers - 1,
		Notes:      "benchmark MLP " + strings.Join(parts, "-") + ": Gemm(transB=1) + Relu",
	})
}

// Params is the number of weights and biases of a BigMLP of these widths.
func BigMLPParams(sizes ...int64) int64 {
	var p int64
	for i := 0; i+1 < len(sizes); i++ {
		p += sizes[i]*sizes[i+1] + sizes[i+1]
	}
	return p
}

// DeepMLP builds a chain of depth dense layers of the same width, each a
// Gemm(transB=1) followed by Relu (none after the last), float32, opset 13;
// without biases when bias is false (Gemm with no C input). It exists to
// measure how the cost of a run grows with the number of layers: every
// layer but the last is prunable, so the loader, the analysis, the
// selection and the export all see depth layers.
//
// Random weights of the usual scale would let a deep chain of narrow ReLU
// layers collapse to a constant within a few hundred layers, and every
// importance would then be zero. Each weight is therefore a scaled random
// permutation plus a small positive mixing term, W = 0.999 P + 0.001 U(0,
// 0.5), and each bias is U(±0.001): activations stay non-negative, O(1)
// and input-dependent at any depth.
func DeepMLP(width, depth int64, bias bool) Case {
	if width <= 0 || depth <= 0 {
		panic(fmt.Sprintf("testmodels.DeepMLP: width %d, depth %d", width, depth))
	}
	name := fmt.Sprintf("deep_mlp_%dx%d", width, depth)
	if !bias {
		name += "_nobias"
	}
	const eps = 1e-3
	b := newBuilder(name, 13)
	x := b.input("input", width)
	idx := 0
	for i := int64(0); i < depth; i++ {
		if i > 0 {
			x = relu(b, idx, x, width)
			idx++
		}
		scope, param := netScope(idx)
		w := b.uniform(param+".weight", width*width, 0, eps/2)
		perm := b.rng(param + ".perm").Perm(int(width))
		for r, c := range perm {
			k := int64(r)*width + int64(c)
			w[k] = float64(float32(w[k] + 1 - eps))
		}
		wn := b.init(param+".weight", []int64{width, width}, w)
		bn := ""
		if bias {
			bn = b.init(param+".bias", []int64{width}, b.uniform(param+".bias", width, -eps, eps))
		}
		x = b.gemm(scope, x, wn, bn, 1, 1, 1)
		idx++
	}
	b.out(x, width)
	notes := fmt.Sprintf("deep chain of %d Gemm(transB=1) + Relu layers of width %d (near-permutation weights)", depth, width)
	if !bias {
		notes += ", no biases"
	}
	return finish(b, Case{
		InputShape: []int64{width},
		Layers:     int(depth),
		Prunable:   int(depth) - 1,
		Notes:      notes,
	})
}
