package testmodels

import "math"

// Convolutional networks as torch exports them (eval mode): Conv with its
// weight and bias initializers, pooling, padding modules and BatchNorm2d,
// in front of the dense head ecprune prunes.

func init() {
	catalogue = append(catalogue,
		entry{"cnn_lenet_opset13", cnnLeNet},
		entry{"cnn_bn_avgpool_gap_opset13", cnnBNAvgGAP},
		entry{"cnn_depthwise_reflectpad_opset17", cnnDepthwise},
		entry{"cnn_pad_attr_opset9", cnnPadAttr},
		entry{"cnn_convtranspose_opset13", cnnConvTranspose},
	)
}

// conv adds a Conv with a [out, in/group, k...] weight and a bias, as
// nn.Conv{1,2}d exports it.
func (b *builder) conv(scope, param, x string, in, out, group int64, kernel []int64, attrs func(*nodeBuilder)) string {
	fan := in / group
	for _, k := range kernel {
		fan *= k
	}
	bound := 1 / math.Sqrt(float64(fan))
	dims := append([]int64{out, in / group}, kernel...)
	n := out * fan
	w := b.init(param+".weight", dims, b.uniform(param+".weight", n, -bound, bound))
	bias := b.init(param+".bias", []int64{out}, b.uniform(param+".bias", out, -bound, bound))
	return b.opWith("Conv", scope, func(nb *nodeBuilder) {
		if attrs != nil {
			attrs(nb)
		}
		dilated := false
		for _, a := range nb.n.Attribute {
			dilated = dilated || a.GetName() == "dilations"
		}
		if !dilated {
			ones := make([]int64, len(kernel))
			for i := range ones {
				ones[i] = 1
			}
			nb.ints("dilations", ones...)
		}
		nb.i("group", group).ints("kernel_shape", kernel...)
	}, x, w, bias)
}

// batchNorm2d adds BatchNormalization with trained-looking statistics.
func (b *builder) batchNorm2d(scope, param, x string, c int64, opset int64) string {
	w := b.init(param+".weight", []int64{c}, b.uniform(param+".weight", c, 0.5, 1.5))
	bi := b.init(param+".bias", []int64{c}, b.uniform(param+".bias", c, -0.2, 0.2))
	m := b.init(param+".running_mean", []int64{c}, b.uniform(param+".running_mean", c, -0.2, 0.2))
	v := b.init(param+".running_var", []int64{c}, b.uniform(param+".running_var", c, 0.5, 1.5))
	return b.opWith("BatchNormalization", scope, func(n *nodeBuilder) {
		n.f("epsilon", 1e-5).f("momentum", 0.9)
		if opset >= 15 {
			n.i("training_mode", 0)
		}
	}, x, w, bi, m, v)
}

// flattenView is x.view(x.size(0), -1) as torch 1.13 exports it.
func (b *builder) flattenView(x string) string {
	shape := b.op("Shape", "", x)
	idx := b.constantT("", b.tensor("", tInt64, nil, []float64{0}))
	n := b.opWith("Gather", "", func(nb *nodeBuilder) { nb.i("axis", 0) }, shape, idx)
	n = b.op("Unsqueeze", "", n, b.constantInt64("", 0))
	cat := b.opWith("Concat", "", func(nb *nodeBuilder) { nb.i("axis", 0) }, n, b.constantInt64("", -1))
	return b.op("Reshape", "", x, cat)
}

// cnnLeNet: LeNet-5 on [1,12,12]: Conv(5x5, pad 2)+Relu+MaxPool(2),
// Conv(3x3)+Relu+MaxPool(2), view, Linear+Relu, Linear.
func cnnLeNet(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 1, 12, 12)
	pool := func(nb *nodeBuilder) {
		nb.i("ceil_mode", 0).ints("kernel_shape", 2, 2).ints("pads", 0, 0, 0, 0).ints("strides", 2, 2)
	}
	x = b.conv("/features/features.0/Conv", "features.0", x, 1, 4, 1, []int64{5, 5}, func(n *nodeBuilder) { n.ints("pads", 2, 2, 2, 2).ints("strides", 1, 1) })
	x = b.op("Relu", "/features/features.1", x)
	x = b.opWith("MaxPool", "/features/features.2", pool, x)
	x = b.conv("/features/features.3/Conv", "features.3", x, 4, 6, 1, []int64{3, 3}, func(n *nodeBuilder) { n.ints("pads", 0, 0, 0, 0).ints("strides", 1, 1) })
	x = b.op("Relu", "/features/features.4", x)
	x = b.opWith("MaxPool", "/features/features.5", pool, x)
	x = b.flattenView(x) // [N, 6*2*2]
	x = b.linear("/classifier/classifier.0", "classifier.0", x, 24, 16)
	x = b.op("Relu", "/classifier/classifier.1", x)
	b.out(b.linear("/classifier/classifier.2", "classifier.2", x, 16, 4), 4)
	return finish(b, Case{InputShape: []int64{1, 12, 12}, Layers: 2, Prunable: 1, inLo: 0, inHi: 1,
		Notes: "LeNet-5: Conv(5x5, pads 2)+Relu+MaxPool(2), Conv(3x3)+Relu+MaxPool(2), x.view(N, -1), Linear+Relu, Linear"})
}

// cnnBNAvgGAP: Conv(3x3, stride 2, pad 1)+BatchNorm2d+Relu,
// AvgPool(3, stride 1, pad 1, count_include_pad=False), ZeroPad2d((1,0,0,1)),
// Conv(3x3)+Relu with ceil-mode AvgPool, GlobalAveragePool, Flatten, MLP head.
func cnnBNAvgGAP(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 3, 9, 9)
	x = b.conv("/f/f.0/Conv", "f.0", x, 3, 8, 1, []int64{3, 3}, func(n *nodeBuilder) { n.ints("pads", 1, 1, 1, 1).ints("strides", 2, 2) })
	x = b.batchNorm2d("/f/f.1", "f.1", x, 8, 13)
	x = b.op("Relu", "/f/f.2", x)
	x = b.opWith("AveragePool", "/f/f.3", func(n *nodeBuilder) {
		n.i("ceil_mode", 0).i("count_include_pad", 0).ints("kernel_shape", 3, 3).ints("pads", 1, 1, 1, 1).ints("strides", 1, 1)
	}, x)
	// nn.ZeroPad2d((left 1, right 0, top 0, bottom 1)): Pad with an int64
	// pads input [0,0,top,left, 0,0,bottom,right] and a constant 0.
	pads := b.constantInt64("/f/f.4", 0, 0, 0, 1, 0, 0, 1, 0)
	x = b.opWith("Pad", "/f/f.4", func(n *nodeBuilder) { n.s("mode", "constant") }, x, pads, b.constant("/f/f.4", nil, 0))
	x = b.conv("/f/f.5/Conv", "f.5", x, 8, 12, 1, []int64{3, 3}, func(n *nodeBuilder) { n.ints("pads", 0, 0, 0, 0).ints("strides", 1, 1) })
	x = b.op("Relu", "/f/f.6", x)
	x = b.opWith("AveragePool", "/f/f.7", func(n *nodeBuilder) {
		n.i("ceil_mode", 1).i("count_include_pad", 1).ints("kernel_shape", 2, 2).ints("pads", 0, 0, 0, 0).ints("strides", 2, 2)
	}, x)
	x = b.op("GlobalAveragePool", "/pool", x)
	x = b.opWith("Flatten", "/flat", func(n *nodeBuilder) { n.i("axis", 1) }, x)
	x = b.linear("/head/head.0", "head.0", x, 12, 16)
	x = b.op("Relu", "/head/head.1", x)
	b.out(b.linear("/head/head.2", "head.2", x, 16, 5), 5)
	return finish(b, Case{InputShape: []int64{3, 9, 9}, Layers: 2, Prunable: 1,
		Notes: "Conv(stride 2)+BatchNorm2d+Relu, AvgPool(count_include_pad=False), ZeroPad2d (Pad with pads and value inputs), Conv+Relu, AvgPool(ceil_mode, count_include_pad), GlobalAveragePool, Flatten, MLP head"})
}

// cnnDepthwise: ReflectionPad2d(1), depthwise Conv(3x3, groups=C) and
// pointwise Conv(1x1) with Relu, MaxPool(2, stride 3, pad 1, ceil_mode)
// whose last window is dropped, ReplicationPad2d(1), dilated Conv, GlobalMaxPool, Flatten,
// MLP head.
func cnnDepthwise(name string) Case {
	b := newBuilder(name, 17)
	x := b.input("input", 4, 10, 10)
	x = b.opWith("Pad", "/f/f.0", func(n *nodeBuilder) { n.s("mode", "reflect") }, x, b.constantInt64("/f/f.0", 0, 0, 1, 1, 0, 0, 1, 1))
	x = b.conv("/f/f.1/Conv", "f.1", x, 4, 8, 4, []int64{3, 3}, func(n *nodeBuilder) { n.ints("pads", 0, 0, 0, 0).ints("strides", 1, 1) })
	x = b.op("Relu", "/f/f.2", x)
	x = b.conv("/f/f.3/Conv", "f.3", x, 8, 8, 1, []int64{1, 1}, func(n *nodeBuilder) { n.ints("pads", 0, 0, 0, 0).ints("strides", 1, 1) })
	x = b.op("Relu", "/f/f.4", x)
	x = b.opWith("MaxPool", "/f/f.5", func(n *nodeBuilder) {
		// ceil_mode would add a 5th window starting in the end padding;
		// torch and ORT drop it (output 4, not 5).
		n.i("ceil_mode", 1).ints("kernel_shape", 2, 2).ints("pads", 1, 1, 1, 1).ints("strides", 3, 3)
	}, x)
	x = b.opWith("Pad", "/f/f.6", func(n *nodeBuilder) { n.s("mode", "edge") }, x, b.constantInt64("/f/f.6", 0, 0, 1, 1, 0, 0, 1, 1))
	x = b.conv("/f/f.7/Conv", "f.7", x, 8, 6, 2, []int64{3, 3}, func(n *nodeBuilder) {
		n.ints("dilations", 2, 2).ints("pads", 1, 1, 1, 1).ints("strides", 1, 1)
	})
	x = b.op("GlobalMaxPool", "/pool", x)
	x = b.opWith("Flatten", "/flat", func(n *nodeBuilder) { n.i("axis", 1) }, x)
	x = b.linear("/head/head.0", "head.0", x, 6, 12)
	x = b.op("Relu", "/head/head.1", x)
	b.out(b.linear("/head/head.2", "head.2", x, 12, 3), 3)
	return finish(b, Case{InputShape: []int64{4, 10, 10}, Layers: 2, Prunable: 1,
		Notes: "ReflectionPad2d, depthwise Conv(groups=4, 4->8), pointwise Conv(1x1), MaxPool(2, stride 3, pad 1, ceil_mode: last window dropped), ReplicationPad2d, dilated grouped Conv, GlobalMaxPool, Flatten, MLP head (opset 17)"})
}

// cnnPadAttr: opset 9, where Pad takes pads and value as attributes:
// ConstantPad1d(2, 0.5), Conv1d(stride 2)+Relu, MaxPool1d, Flatten, MLP.
func cnnPadAttr(name string) Case {
	b := newBuilder(name, 9).withInitializersAsInputs() // as torch wrote opset 9
	x := b.input("input", 2, 11)
	x = b.opWith("Pad", "/f/f.0", func(n *nodeBuilder) { n.s("mode", "constant").ints("pads", 0, 0, 2, 0, 0, 2).f("value", 0.5) }, x)
	x = b.conv("/f/f.1/Conv", "f.1", x, 2, 5, 1, []int64{3}, func(n *nodeBuilder) { n.ints("pads", 1, 1).ints("strides", 2) })
	x = b.op("Relu", "/f/f.2", x)
	x = b.opWith("MaxPool", "/f/f.3", func(n *nodeBuilder) { n.ints("kernel_shape", 2).ints("pads", 0, 0).ints("strides", 2) }, x)
	x = b.opWith("Flatten", "/flat", func(n *nodeBuilder) { n.i("axis", 1) }, x)
	x = b.linear("/head/head.0", "head.0", x, 20, 8)
	x = b.op("Relu", "/head/head.1", x)
	b.out(b.linear("/head/head.2", "head.2", x, 8, 2), 2)
	return finish(b, Case{InputShape: []int64{2, 11}, Layers: 2, Prunable: 1,
		Notes: "opset 9: ConstantPad1d as Pad with pads and value attributes, Conv1d(stride 2, pad 1)+Relu, MaxPool1d(2), Flatten, MLP head"})
}

// cnnConvTranspose: Conv(stride 2)+Relu, ConvTranspose2d(stride 2,
// padding 1, output_padding 1, groups 2)+Relu, MaxPool, nearest Upsample,
// Flatten, MLP head.
func cnnConvTranspose(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 2, 7, 7)
	x = b.conv("/f/f.0/Conv", "f.0", x, 2, 4, 1, []int64{3, 3}, func(n *nodeBuilder) { n.ints("pads", 1, 1, 1, 1).ints("strides", 2, 2) })
	x = b.op("Relu", "/f/f.1", x) // [N, 4, 4, 4]
	w := b.init("f.2.weight", []int64{4, 3, 3, 3}, b.uniform("f.2.weight", 4*3*9, -0.3, 0.3))
	bias := b.init("f.2.bias", []int64{6}, b.uniform("f.2.bias", 6, -0.3, 0.3))
	x = b.opWith("ConvTranspose", "/f/f.2/ConvTranspose", func(n *nodeBuilder) {
		n.ints("dilations", 1, 1).i("group", 2).ints("kernel_shape", 3, 3).ints("output_padding", 1, 1).ints("pads", 1, 1, 1, 1).ints("strides", 2, 2)
	}, x, w, bias) // [N, 6, 8, 8]
	x = b.op("Relu", "/f/f.3", x)
	x = b.opWith("MaxPool", "/f/f.4", func(n *nodeBuilder) {
		n.i("ceil_mode", 0).ints("kernel_shape", 4, 4).ints("pads", 0, 0, 0, 0).ints("strides", 4, 4)
	}, x) // [N, 6, 2, 2]
	// nn.Upsample(scale_factor=2, mode="nearest") at opset 13.
	scales := b.constant("/f/f.5", []int64{4}, 1, 1, 2, 2)
	x = b.opWith("Resize", "/f/f.5", func(n *nodeBuilder) {
		n.s("coordinate_transformation_mode", "asymmetric").f("cubic_coeff_a", -0.75).s("mode", "nearest").s("nearest_mode", "floor")
	}, x, "", scales) // [N, 6, 4, 4]
	x = b.opWith("Flatten", "/flat", func(n *nodeBuilder) { n.i("axis", 1) }, x)
	x = b.linear("/head/head.0", "head.0", x, 96, 10)
	x = b.op("Relu", "/head/head.1", x)
	b.out(b.linear("/head/head.2", "head.2", x, 10, 3), 3)
	return finish(b, Case{InputShape: []int64{2, 7, 7}, Layers: 2, Prunable: 1,
		Notes: "Conv(stride 2)+Relu, ConvTranspose2d(4->6, stride 2, padding 1, output_padding 1, groups 2)+Relu, MaxPool(4), Upsample(scale_factor=2, nearest) as Resize, Flatten, MLP head"})
}
