package testmodels

import "github.com/ecprune/ecprune/onnxio/onnxpb"

// Cases with ops that carry no derivative between a dense layer and the
// outputs: the layers behind them are analysed with their local objective
// (analysis/local.go), the others at the outputs.

func init() {
	catalogue = append(catalogue,
		entry{"round_side_output_opset13", roundSideOutput},
		entry{"argmax_router_opset13", argmaxRouter},
		entry{"argmax_only_opset13", argmaxOnly},
	)
}

// roundSideOutput: h = relu(fc0(x)); the main output fc1(h) and a second
// output torch.round(side(h)). side's only path to the outputs crosses
// Round (piecewise constant); fc0 reaches the main output too.
func roundSideOutput(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 6)
	h := b.op("Relu", "/act", b.linear("/fc0/Gemm", "fc0", x, 6, 8))
	b.out(b.linear("/fc1/Gemm", "fc1", h, 8, 4), 4)
	r := b.op("Round", "", b.linear("/side/Gemm", "side", h, 8, 3))
	b.output(r, "rounded", b.elem, true, 3)
	return finish(b, Case{InputShape: []int64{6}, Layers: 3, Prunable: 1,
		Notes: "a side output torch.round(side(h)) beside the main output fc1(h): side's only path to the outputs crosses Round"})
}

// argmaxRouter: a top-1 router picks one expert output per sample,
// experts(h).gather(1, router(h).argmax(1, keepdim=True)). The router's
// only path to the output is through ArgMax's integer indices.
func argmaxRouter(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 6)
	h := b.op("Relu", "/act", b.linear("/fc0/Gemm", "fc0", x, 6, 8))
	idx := b.opWith("ArgMax", "/router", func(nb *nodeBuilder) { nb.i("axis", 1).i("keepdims", 1) },
		b.linear("/router/Gemm", "router", h, 8, 3))
	y := b.opWith("GatherElements", "", func(nb *nodeBuilder) { nb.i("axis", 1) },
		b.linear("/experts/Gemm", "experts", h, 8, 3), idx)
	b.out(y, 1)
	return finish(b, Case{InputShape: []int64{6}, Layers: 3, Prunable: 1,
		Notes: "a top-1 router: experts(h).gather(1, router(h).argmax(1, keepdim=True)); the router reaches the output only through ArgMax's indices"})
}

// argmaxOnly: a classifier exported with its argmax, the class index
// (int64) the only output: no layer has a derivative path.
func argmaxOnly(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 6)
	h := b.op("Relu", "/act", b.linear("/fc0/Gemm", "fc0", x, 6, 8))
	y := b.opWith("ArgMax", "", func(nb *nodeBuilder) { nb.i("axis", 1).i("keepdims", 0) }, b.linear("/fc1/Gemm", "fc1", h, 8, 4))
	b.output(y, "output", onnxpb.TensorProto_INT64, true)
	return finish(b, Case{InputShape: []int64{6}, Layers: 2, Prunable: 1,
		Notes: "fc1(relu(fc0(x))).argmax(1) as the only output (int64): every layer uses its local objective"})
}
