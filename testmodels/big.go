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
