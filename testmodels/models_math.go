package testmodels

import (
	"math"
)

// Cases of the math, normalisation and recurrent op family, in the shapes
// torch 1.13's exporter gives nn.LayerNorm (decomposed below opset 17,
// LayerNormalization from 17), nn.GELU, nn.ReLU6 and torch.clamp (Clip
// with attributes before opset 11, with Constant inputs after), and
// nn.LSTM / nn.GRU with batch_first=True (a Transpose to [seq, batch, ...]
// in front, the initial states from a Shape -> Gather -> Unsqueeze ->
// Concat -> ConstantOfShape subgraph, Squeeze and Transpose behind).
func init() {
	catalogue = append(catalogue,
		entry{"layernorm_decomposed_opset13", layerNormTokens(13)},
		entry{"layernorm_opset17", layerNormTokens(17)},
		entry{"layernorm_gelu_mlp_opset13", layerNormGeluMLP(13)},
		entry{"layernorm_gelu_mlp_opset17", layerNormGeluMLP(17)},
		entry{"relu6_clamp_opset9", relu6Clamp(9)},
		entry{"relu6_clamp_opset13", relu6Clamp(13)},
		entry{"lstm_head_opset13", rnnHead("LSTM")},
		entry{"gru_head_opset13", rnnHead("GRU")},
	)
}

// layerNorm adds nn.LayerNorm(width) over the last axis at scope
// (parameters param.weight and param.bias): the LayerNormalization op from
// opset 17, below it torch's decomposition ReduceMean, Sub, Pow 2,
// ReduceMean, Add eps, Sqrt, Div, Mul weight, Add bias.
func layerNorm(b *builder, scope, param, x string, width int64) string {
	w := b.init(param+".weight", []int64{width}, b.uniform(param+".weight", width, 0.5, 1.5))
	bias := b.init(param+".bias", []int64{width}, b.uniform(param+".bias", width, -0.5, 0.5))
	if b.opset >= 17 {
		return b.opWith("LayerNormalization", scope, func(n *nodeBuilder) {
			n.i("axis", -1).f("epsilon", 1e-5)
		}, x, w, bias)
	}
	last := func(n *nodeBuilder) { n.ints("axes", -1) }
	mean := b.opWith("ReduceMean", scope, last, x)
	d := b.op("Sub", scope, x, mean)
	sq := b.op("Pow", scope, d, b.constant(scope, nil, 2))
	v := b.opWith("ReduceMean", scope, last, sq)
	v = b.op("Add", scope, v, b.constant(scope, nil, float64(float32(1e-5))))
	sd := b.op("Sqrt", scope, v)
	y := b.op("Div", scope, d, sd)
	y = b.op("Mul", scope, y, w)
	return b.op("Add", scope, y, bias)
}

// layerNormTokens: tokens [N, 5, 8] through Linear(8, 16), LayerNorm(16),
// Linear(16, 4): nn.Linear on a rank-3 input exports as MatMul + Add.
func layerNormTokens(opset int64) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		x := b.input("input", 5, 8)
		x = b.linearMatMul("/fc1", "fc1", x, 8, 16, true)
		x = layerNorm(b, "/ln", "ln", x, 16)
		b.out(b.linearMatMul("/fc2", "fc2", x, 16, 4, true), 5, 4)
		form := "torch's decomposition (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul, Add)"
		if opset >= 17 {
			form = "LayerNormalization(axis=-1, epsilon=1e-5)"
		}
		return finish(b, Case{InputShape: []int64{5, 8}, Layers: 2, Prunable: 0,
			Notes: "tokens [N,5,8]: MatMul+Add Linear(8,16), nn.LayerNorm(16) as " + form + ", MatMul+Add Linear(16,4); LayerNorm mixes fc1's features, so no neuron of fc1 is removable alone"})
	}
}

// layerNormGeluMLP: Linear, LayerNorm, GELU twice, then the head, on a
// 2-D input (Gemm layers; GELU is decomposed with Erf below opset 20).
func layerNormGeluMLP(opset int64) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		x := b.input("input", 8)
		sizes := []int64{8, 16, 16, 4}
		idx := 0
		for i := 0; i+1 < len(sizes); i++ {
			scope, param := netScope(idx)
			x = b.linear(scope, param, x, sizes[i], sizes[i+1])
			idx++
			if i+2 < len(sizes) {
				scope, param = netScope(idx)
				x = layerNorm(b, scope, param, x, sizes[i+1])
				idx++
				x = geluErf(b, idx, x, sizes[i+1])
				idx++
			}
		}
		b.out(x, 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 0,
			Notes: "nn.Sequential(Linear, LayerNorm, GELU, Linear, LayerNorm, GELU, Linear): Gemm layers, LayerNorm decomposed below opset 17, GELU as Div/Erf/Add/Mul/Mul"})
	}
}

// relu6Clamp: Linear, ReLU6, Linear, ReLU6, Linear, torch.clamp(max=1).
// torch exports ReLU6 as Relu then Clip(max 6) at opset 9 (attributes)
// and Relu then Clip(x, 0, 6) from opset 11 (Constant inputs); clamp with
// only max leaves Clip's min input empty.
func relu6Clamp(opset int64) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		if opset == 9 {
			b.withInitializersAsInputs()
		}
		x := b.input("input", 8)
		clip := func(x string, lo *float64, hi float64) string {
			if opset < 11 {
				return b.opWith("Clip", "", func(n *nodeBuilder) {
					if lo != nil {
						n.f("min", float32(*lo))
					}
					n.f("max", float32(hi))
				}, x)
			}
			l := ""
			if lo != nil {
				l = b.constant("", nil, *lo)
			}
			return b.op("Clip", "", x, l, b.constant("", nil, hi))
		}
		zero := 0.0
		relu6 := func(x string) string {
			x = b.op("Relu", "", x)
			if opset < 11 {
				return clip(x, nil, 6)
			}
			return clip(x, &zero, 6)
		}
		x = relu6(b.linear("/a", "a", x, 8, 16))
		x = relu6(b.linear("/b", "b", x, 16, 12))
		x = clip(b.linear("/c", "c", x, 12, 4), nil, 1)
		b.out(x, 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "F.relu6 between Gemm layers (Relu then Clip max 6: attribute at opset 9, Clip(x, 0, 6) with Constant inputs from 11) and torch.clamp(head, max=1) (Clip with an empty min input)"})
	}
}

// rnnHead: x [N, 5, 6] -> Linear(6, 6) + ReLU -> nn.LSTM/nn.GRU(6, 8,
// batch_first=True) -> the last step -> Linear(8, 3), as torch exports it.
func rnnHead(cell string) func(string) Case {
	return func(name string) Case {
		const seq, in, hid, out = 5, 6, 8, 3
		b := newBuilder(name, 13)
		x := b.input("input", seq, in)
		x = b.linearMatMul("/proj", "proj", x, in, in, true)
		x = b.op("Relu", "", x)

		// The zero initial states, [1, N, hidden], from x's batch size.
		scalar := func(scope string, v float64) string {
			return b.constantT(scope, b.tensor("", tInt64, nil, []float64{v}))
		}
		sh := b.op("Shape", "/rnn", x)
		n := b.opWith("Gather", "/rnn", func(nb *nodeBuilder) { nb.i("axis", 0) }, sh, scalar("/rnn", 0))
		n = b.op("Unsqueeze", "/rnn", n, b.constantInt64("/rnn", 0))
		shape := b.opWith("Concat", "/rnn", func(nb *nodeBuilder) { nb.i("axis", 0) },
			b.constantInt64("/rnn", 1), n, b.constantInt64("/rnn", hid))
		h0 := b.opWith("ConstantOfShape", "/rnn", func(nb *nodeBuilder) {
			nb.t("value", b.tensor("", tFloat, []int64{1}, []float64{0}))
		}, shape)

		xt := b.opWith("Transpose", "/rnn", func(nb *nodeBuilder) { nb.ints("perm", 1, 0, 2) }, x)
		gates := int64(4)
		if cell == "GRU" {
			gates = 3
		}
		// torch's default init U(-1/sqrt(hidden), 1/sqrt(hidden)), W, R and
		// B stored in ONNX's gate order under folded-constant names.
		k := 1 / math.Sqrt(hid)
		w := b.init("onnx::"+cell+"_108", []int64{1, gates * hid, in}, b.uniform("w", gates*hid*in, -k, k))
		r := b.init("onnx::"+cell+"_109", []int64{1, gates * hid, hid}, b.uniform("r", gates*hid*hid, -k, k))
		bias := b.init("onnx::"+cell+"_110", []int64{1, 2 * gates * hid}, b.uniform("b", 2*gates*hid, -k, k))
		ins := []string{xt, w, r, bias, "", h0}
		outs := []string{"", ""}
		if cell == "LSTM" {
			ins = append(ins, h0)
			outs = append(outs, "")
		}
		y := b.node(cell, "/rnn", ins...).i("hidden_size", hid)
		if cell == "GRU" {
			y.i("linear_before_reset", 1)
		}
		ys := y.outputs(outs...).done()
		v := b.op("Squeeze", "/rnn", ys[0], b.constantInt64("/rnn", 1))
		v = b.opWith("Transpose", "/rnn", func(nb *nodeBuilder) { nb.ints("perm", 1, 0, 2) }, v)
		v = b.opWith("Gather", "", func(nb *nodeBuilder) { nb.i("axis", 1) }, v, scalar("", -1))
		b.out(b.linear("/fc", "fc", v, hid, out), out)
		return finish(b, Case{InputShape: []int64{seq, in}, Layers: 2, Prunable: 0,
			Notes: "Linear(6,6)+ReLU on [N,5,6], nn." + cell + "(6, 8, batch_first=True) exported seq-first: Transpose in, zero initial state(s) from Shape/Gather/Unsqueeze/Concat/ConstantOfShape, " + cell + " (W, R, B initializers), Squeeze(axis 1) and Transpose out, Gather(-1, axis 1) for the last step, Gemm head"})
	}
}
