package testmodels

import (
	"encoding/binary"
	"math"
	"strconv"
)

// Cases for the data-movement, shape-arithmetic and product ops, in the
// layouts torch.onnx.export gives them: shapes computed from the
// activations at run time (x.view(B, T, -1), the head split of
// attention), cls.expand + torch.cat, x[:, 0] and x[:, 1:], attention
// products of two activations, a fused qkv Split, einsum forms, and
// MatMul with constants that are not [in,out] weights.

func init() {
	catalogue = append(catalogue,
		entry{"view_keep2_opset13", viewKeep2},
		entry{"view_mul_dims_opset13", viewMulDims},
		entry{"attention_vit_opset13", attentionViT},
		entry{"split_qkv_opset11", splitQKV(11)},
		entry{"split_qkv_opset13", splitQKV(13)},
		entry{"split_qkv_opset18", splitQKV(18)},
		entry{"cls_token_opset13", clsToken},
		entry{"token_slice_opset9", tokenSlice(9)},
		entry{"token_slice_opset13", tokenSlice(13)},
		entry{"einsum_bilinear_opset13", einsumBilinear},
		entry{"einsum_attention_opset13", einsumAttention},
		entry{"matmul_const_operands_opset13", matmulConstOperands},
	)
}

// dimOf is x.size(axis) as torch exports it: Shape, then Gather of a
// scalar index (a 0-d int64).
func (b *builder) dimOf(scope, x string, axis int64) string {
	shape := b.op("Shape", scope, x)
	idx := b.constantT(scope, b.tensor("", tInt64, []int64{}, []float64{float64(axis)}))
	return b.opWith("Gather", scope, func(nb *nodeBuilder) { nb.i("axis", 0) }, shape, idx)
}

// unsqueeze0 makes a scalar a 1-element vector: axes as an input from
// opset 13, as an attribute before.
func (b *builder) unsqueeze0(scope, v string) string {
	if b.opset >= 13 {
		return b.op("Unsqueeze", scope, v, b.constantInt64(scope, 0))
	}
	return b.opWith("Unsqueeze", scope, func(nb *nodeBuilder) { nb.ints("axes", 0) }, v)
}

// concat0 concatenates shape pieces (Concat axis 0).
func (b *builder) concat0(scope string, parts ...string) string {
	return b.opWith("Concat", scope, func(nb *nodeBuilder) { nb.i("axis", 0) }, parts...)
}

// int64Max is a Constant [INT64_MAX], the end torch writes for x[:, 1:]
// (float64 cannot carry it through tensor).
func (b *builder) int64Max(scope string) string {
	t := b.tensor("", tInt64, []int64{1}, []float64{0})
	t.RawData = binary.LittleEndian.AppendUint64(nil, math.MaxInt64)
	return b.constantT(scope, t)
}

func (b *builder) scalarInt64(scope string, v int64) string {
	return b.constantT(scope, b.tensor("", tInt64, []int64{}, []float64{float64(v)}))
}

// viewKeep2: x.view(x.size(0), x.size(1), -1) on [N,4,2,3], then a
// MatMul MLP over the last axis.
func viewKeep2(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 4, 2, 3)
	n, t := b.dimOf("", x, 0), b.dimOf("", x, 1)
	shape := b.concat0("", b.unsqueeze0("", n), b.unsqueeze0("", t), b.constantInt64("", -1))
	x = b.op("Reshape", "", x, shape)
	x = b.linearMatMul("/fc1", "fc1", x, 6, 8, true)
	x = b.op("Relu", "/act", x)
	b.out(b.linearMatMul("/fc2", "fc2", x, 8, 5, true), 4, 5)
	return finish(b, Case{InputShape: []int64{4, 2, 3}, Layers: 2, Prunable: 1,
		Notes: "x.view(x.size(0), x.size(1), -1) on [N,4,2,3]: two dimensions of x kept, the shape built at run time (Shape, Gather, Unsqueeze, Concat)"})
}

// viewMulDims: x.view(x.size(0), x.size(1) * x.size(2), -1): integer Mul
// in the shape arithmetic.
func viewMulDims(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 2, 3, 4)
	n, d1, d2 := b.dimOf("", x, 0), b.dimOf("", x, 1), b.dimOf("", x, 2)
	m := b.op("Mul", "", d1, d2)
	shape := b.concat0("", b.unsqueeze0("", n), b.unsqueeze0("", m), b.constantInt64("", -1))
	x = b.op("Reshape", "", x, shape)
	x = b.linearMatMul("/fc1", "fc1", x, 4, 5, true)
	x = b.op("Relu", "/act", x)
	b.out(b.linearMatMul("/fc2", "fc2", x, 5, 3, true), 6, 3)
	return finish(b, Case{InputShape: []int64{2, 3, 4}, Layers: 2, Prunable: 1,
		Notes: "x.view(x.size(0), x.size(1) * x.size(2), -1) on [N,2,3,4]: integer Mul of two dimensions in the run-time shape"})
}

// attentionViT is timm's Attention as torch 1.13 exports it at opset 13
// (the bundled mnist_vit's pattern): qkv Linear, reshape(B, T, 3, H,
// C // H) with C // H computed by an integer Div and two Casts,
// permute(2, 0, 3, 1, 4), q, k, v = qkv[0], qkv[1], qkv[2] (Gather),
// q @ k.transpose(-2, -1) * scale, softmax, @ v, transpose(1, 2),
// reshape(B, T, C), proj, a residual, then the cls token x[:, 0] into a
// Linear head.
func attentionViT(name string) Case {
	const T, C, H = 5, 8, 2
	b := newBuilder(name, 13)
	x := b.input("input", T, C)
	s := "/attn"
	n, t, c := b.dimOf(s, x, 0), b.dimOf(s, x, 1), b.dimOf(s, x, 2)
	qkv := b.linearMatMul(s+"/qkv", "attn.qkv", x, C, 3*C, true)
	hd := b.op("Div", s, c, b.scalarInt64(s, H))
	hd = b.opWith("Cast", s, func(nb *nodeBuilder) { nb.i("to", 7) }, hd)
	hd = b.opWith("Cast", s, func(nb *nodeBuilder) { nb.i("to", 7) }, hd)
	shape := b.concat0(s, b.unsqueeze0(s, n), b.unsqueeze0(s, t), b.constantInt64(s, 3), b.constantInt64(s, H), b.unsqueeze0(s, hd))
	qkv = b.op("Reshape", s, qkv, shape)
	qkv = b.opWith("Transpose", s, func(nb *nodeBuilder) { nb.ints("perm", 2, 0, 3, 1, 4) }, qkv)
	part := func(i int64) string {
		return b.opWith("Gather", s, func(nb *nodeBuilder) { nb.i("axis", 0) }, qkv, b.scalarInt64(s, i))
	}
	q, k, v := part(0), part(1), part(2)
	k = b.opWith("Transpose", s, func(nb *nodeBuilder) { nb.ints("perm", 0, 1, 3, 2) }, k)
	a := b.op("MatMul", s, q, k)
	a = b.op("Mul", s, a, b.constant(s, nil, 0.5))
	a = b.opWith("Softmax", s, func(nb *nodeBuilder) { nb.i("axis", -1) }, a)
	o := b.op("MatMul", s, a, v)
	o = b.opWith("Transpose", s, func(nb *nodeBuilder) { nb.ints("perm", 0, 2, 1, 3) }, o)
	o = b.op("Reshape", s, o, b.concat0(s, b.unsqueeze0(s, n), b.unsqueeze0(s, t), b.unsqueeze0(s, c)))
	o = b.linearMatMul(s+"/proj", "attn.proj", o, C, C, true)
	x = b.op("Add", "", x, o)
	cls := b.opWith("Gather", "", func(nb *nodeBuilder) { nb.i("axis", 1) }, x, b.scalarInt64("", 0))
	b.out(b.linear("/head", "head", cls, C, 4), 4)
	return finish(b, Case{InputShape: []int64{T, C}, Layers: 3, Prunable: 0,
		Notes: "ViT attention as torch exports it: qkv reshaped to heads with a run-time shape (integer Div, Cast), permute(2,0,3,1,4), Gather of q/k/v, q @ k^T of two activations, softmax, @ v, transpose and reshape back, proj, residual, x[:, 0] into a Gemm head"})
}

// splitQKV: q, k, v = qkv(x).split(C, dim=-1) (the split sizes an
// attribute before opset 13, an input from 13, num_outputs from 18),
// each viewed as heads with a run-time shape, scaled dot-product
// attention, the heads merged, an output projection. A Linear+ReLU in
// front is prunable.
func splitQKV(opset int64) func(string) Case {
	return func(name string) Case {
		const T, C, H, D = 4, 6, 2, 3
		b := newBuilder(name, opset)
		x := b.input("input", T, C)
		x = b.linearMatMul("/fc0", "fc0", x, C, C, true)
		x = b.op("Relu", "/act", x)
		s := "/attn"
		qkv := b.linearMatMul(s+"/qkv", "attn.qkv", x, C, 3*C, true)
		nb := b.node("Split", s, qkv).i("axis", -1)
		switch {
		case opset >= 18:
			nb.i("num_outputs", 3)
		case opset >= 13:
			nb.n.Input = append(nb.n.Input, b.constantInt64(s, C, C, C))
		default:
			nb.ints("split", C, C, C)
		}
		parts := nb.outputs("", "", "").done()
		n, t := b.dimOf(s, x, 0), b.dimOf(s, x, 1)
		heads := b.concat0(s, b.unsqueeze0(s, n), b.unsqueeze0(s, t), b.constantInt64(s, H), b.constantInt64(s, D))
		perm := func(v string, p ...int64) string {
			return b.opWith("Transpose", s, func(nb *nodeBuilder) { nb.ints("perm", p...) }, v)
		}
		q := perm(b.op("Reshape", s, parts[0], heads), 0, 2, 1, 3)
		k := perm(b.op("Reshape", s, parts[1], heads), 0, 2, 3, 1)
		v := perm(b.op("Reshape", s, parts[2], heads), 0, 2, 1, 3)
		a := b.op("Div", s, b.op("MatMul", s, q, k), b.constant(s, nil, math.Sqrt(D)))
		a = b.opWith("Softmax", s, func(nb *nodeBuilder) { nb.i("axis", -1) }, a)
		o := perm(b.op("MatMul", s, a, v), 0, 2, 1, 3)
		o = b.op("Reshape", s, o, b.concat0(s, b.unsqueeze0(s, n), b.unsqueeze0(s, t), b.constantInt64(s, C)))
		b.out(b.linearMatMul(s+"/proj", "attn.proj", o, C, C, true), T, C)
		how := map[bool]string{true: "the sizes an input", false: "the sizes an attribute"}[opset >= 13]
		if opset >= 18 {
			how = "num_outputs=3"
		}
		return finish(b, Case{InputShape: []int64{T, C}, Layers: 3, Prunable: 1,
			Notes: "fused qkv Linear split in three (Split, " + how + "), heads by a run-time Reshape, q @ k^T / sqrt(d), softmax, @ v, heads merged, output projection; a Linear+ReLU in front (opset " + strconv.FormatInt(opset, 10) + ")"})
	}
}

// clsToken: patch embedding, then torch.cat((cls.expand(B, -1, -1), x),
// dim=1) + pos exactly as torch 1.13 exports the expand (Concat of the
// batch size with -1s, Reshape, Shape, ConstantOfShape, Mul by -1,
// Equal, Where, Expand), then x[:, 0] into the head.
func clsToken(name string) Case {
	const T, P, C = 4, 6, 8
	b := newBuilder(name, 13)
	x := b.input("input", T, P)
	n := b.dimOf("", x, 0)
	x = b.linearMatMul("/embed", "embed", x, P, C, true)
	clsW := b.init("cls", []int64{1, 1, C}, b.uniform("cls", C, -1, 1))
	pos := b.init("pos", []int64{1, T + 1, C}, b.uniform("pos", (T+1)*C, -0.5, 0.5))
	sizes := b.concat0("", b.unsqueeze0("", n), b.constantInt64("", -1), b.constantInt64("", -1))
	sizes = b.op("Reshape", "", sizes, b.constantInt64("", -1))
	ones := b.opWith("ConstantOfShape", "", func(nb *nodeBuilder) {
		nb.t("value", b.tensor("", tInt64, []int64{1}, []float64{1}))
	}, b.op("Shape", "", sizes))
	neg := b.op("Mul", "", ones, b.scalarInt64("", -1))
	eq := b.op("Equal", "", sizes, neg)
	sizes = b.op("Where", "", eq, ones, sizes)
	cls := b.op("Expand", "", clsW, sizes)
	x = b.opWith("Concat", "", func(nb *nodeBuilder) { nb.i("axis", 1) }, cls, x)
	x = b.op("Add", "", x, pos)
	x = b.opWith("Gather", "", func(nb *nodeBuilder) { nb.i("axis", 1) }, x, b.scalarInt64("", 0))
	b.out(b.linear("/head", "head", x, C, 4), 4)
	return finish(b, Case{InputShape: []int64{T, P}, Layers: 2, Prunable: 0,
		Notes: "cls token: torch.cat((cls.expand(B, -1, -1), x), 1) + pos as torch exports the expand (ConstantOfShape, Mul, Equal, Where, Expand), then x[:, 0] (Gather) into a Gemm head"})
}

// tokenSlice: x[:, 1:] (Slice to INT64_MAX; starts, ends and axes are
// attributes at opset 9, inputs from 10) flattened into a head, and
// x[:, 0] added to it through a second Linear.
func tokenSlice(opset int64) func(string) Case {
	return func(name string) Case {
		const T, C = 5, 4
		b := newBuilder(name, opset)
		if opset < 11 {
			b.withInitializersAsInputs()
		}
		x := b.input("input", T, C)
		x = b.linearMatMul("/fc0", "fc0", x, C, C, true)
		x = b.op("Relu", "/act", x)
		var rest string
		if opset >= 10 {
			rest = b.op("Slice", "", x, b.constantInt64("", 1), b.int64Max(""), b.constantInt64("", 1), b.constantInt64("", 1))
		} else {
			rest = b.opWith("Slice", "", func(nb *nodeBuilder) {
				nb.ints("axes", 1).ints("ends", math.MaxInt64).ints("starts", 1)
			}, x)
		}
		rest = b.opWith("Flatten", "", func(nb *nodeBuilder) { nb.i("axis", 1) }, rest)
		first := b.opWith("Gather", "", func(nb *nodeBuilder) { nb.i("axis", 1) }, x, b.scalarInt64("", 0))
		y := b.op("Add", "", b.linear("/head", "head", rest, (T-1)*C, 3), b.linear("/cls_head", "cls_head", first, C, 3))
		b.out(y, 3)
		return finish(b, Case{InputShape: []int64{T, C}, Layers: 3, Prunable: 0,
			Notes: "x[:, 1:] (Slice with end INT64_MAX) flattened into a Gemm head plus x[:, 0] (Gather) through another, after a MatMul Linear+ReLU (opset " + strconv.FormatInt(opset, 10) + ")"})
	}
}

// einsumBilinear: torch.einsum('bn,anm,bm->ba', h, W, h) + b on a
// Linear+ReLU feature, then a Linear head.
func einsumBilinear(name string) Case {
	const F, A = 6, 4
	b := newBuilder(name, 13)
	x := b.input("input", F)
	h := b.op("Relu", "/act", b.linear("/fc0", "fc0", x, F, F))
	w := b.init("bilinear.weight", []int64{A, F, F}, b.uniform("bilinear.weight", A*F*F, -0.3, 0.3))
	bias := b.init("bilinear.bias", []int64{A}, b.uniform("bilinear.bias", A, -0.3, 0.3))
	y := b.opWith("Einsum", "/bilinear", func(nb *nodeBuilder) { nb.s("equation", "bn,anm,bm->ba") }, h, w, h)
	y = b.op("Add", "/bilinear", y, bias)
	y = b.op("Relu", "/act2", y)
	b.out(b.linear("/head", "head", y, A, 3), 3)
	return finish(b, Case{InputShape: []int64{F}, Layers: 2, Prunable: 0,
		Notes: "a bilinear form torch.einsum('bn,anm,bm->ba', h, W, h) (Einsum of three operands, h twice) between two Gemm Linears"})
}

// einsumAttention: attention written with einsum ('bqhd,bkhd->bhqk',
// 'bhqk,bkhd->bqhd') on heads from a constant Reshape, and a head
// einsum('bi,oi->bo', x[:, 0], W).
func einsumAttention(name string) Case {
	const T, C, H, D = 4, 6, 2, 3
	b := newBuilder(name, 13)
	x := b.input("input", T, C)
	s := "/attn"
	heads := b.constantInt64(s, 0, 0, H, D)
	q := b.op("Reshape", s, b.linearMatMul(s+"/q", "attn.q", x, C, C, true), heads)
	k := b.op("Reshape", s, b.linearMatMul(s+"/k", "attn.k", x, C, C, true), heads)
	v := b.op("Reshape", s, b.linearMatMul(s+"/v", "attn.v", x, C, C, true), heads)
	es := func(eq string, ins ...string) string {
		return b.opWith("Einsum", s, func(nb *nodeBuilder) { nb.s("equation", eq) }, ins...)
	}
	a := es("bqhd,bkhd->bhqk", q, k)
	a = b.opWith("Softmax", s, func(nb *nodeBuilder) { nb.i("axis", -1) }, a)
	o := es("bhqk,bkhd->bqhd", a, v)
	o = b.op("Reshape", s, o, b.constantInt64(s, 0, 0, C))
	o = b.linearMatMul(s+"/proj", "attn.proj", o, C, C, true)
	first := b.opWith("Gather", "", func(nb *nodeBuilder) { nb.i("axis", 1) }, o, b.scalarInt64("", 0))
	w := b.init("head.weight", []int64{3, C}, b.uniform("head.weight", 3*C, -0.5, 0.5))
	b.out(b.opWith("Einsum", "/head", func(nb *nodeBuilder) { nb.s("equation", "bi,oi->bo") }, first, w), 3)
	return finish(b, Case{InputShape: []int64{T, C}, Layers: 4, Prunable: 0,
		Notes: "attention through einsum: 'bqhd,bkhd->bhqk', softmax, 'bhqk,bkhd->bqhd' on heads from a constant Reshape [0,0,H,D]; a head einsum('bi,oi->bo', x[:, 0], W) with the weight not in a MatMul"})
}

// matmulConstOperands: products with constants that are not dense
// layers: per-head weights x @ W[H,in,out] (a batched constant) and token
// mixing P @ x (the constant first).
func matmulConstOperands(name string) Case {
	const H, T, E, F = 2, 3, 4, 5
	b := newBuilder(name, 13)
	x := b.input("input", H, T, E)
	wh := b.init("heads.weight", []int64{H, E, F}, b.uniform("heads.weight", H*E*F, -0.8, 0.8))
	x = b.op("MatMul", "/heads", x, wh)
	x = b.opWith("Transpose", "", func(nb *nodeBuilder) { nb.ints("perm", 0, 2, 1, 3) }, x)
	x = b.op("Reshape", "", x, b.constantInt64("", 0, 0, H*F))
	mix := b.init("mix.weight", []int64{T, T}, b.uniform("mix.weight", T*T, -0.8, 0.8))
	x = b.op("MatMul", "/mix", mix, x)
	b.out(b.linearMatMul("/fc", "fc", x, H*F, 4, true), T, 4)
	return finish(b, Case{InputShape: []int64{H, T, E}, Layers: 1, Prunable: 0,
		Notes: "MatMul with a batched constant x @ W[H,E,F] (broadcast over the batch) and with a constant first operand P @ x (token mixing), then a MatMul Linear"})
}
