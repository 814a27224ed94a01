package analysis

import (
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// mnistNet is an MNIST-sized MLP 784-256-128-10 with a LogSoftmax head,
// the shape the method is evaluated on, for timing the passes.
func mnistNet(rng *rand.Rand) *onnxio.Network {
	b := newBuilder()
	x := b.input("x", -1, 784)
	h := b.op(onnxio.Op{Kind: onnxio.OpRelu}, b.dense(x, 256, 784, randSlice(rng, 256*784, -0.05, 0.05), randSlice(rng, 256, -0.1, 0.1)))
	h = b.op(onnxio.Op{Kind: onnxio.OpRelu}, b.dense(h, 128, 256, randSlice(rng, 128*256, -0.1, 0.1), randSlice(rng, 128, -0.1, 0.1)))
	z := b.dense(h, 10, 128, randSlice(rng, 10*128, -0.1, 0.1), randSlice(rng, 10, -0.1, 0.1))
	return b.outputs(b.op(onnxio.Op{Kind: onnxio.OpLogSoftmax, Axis: -1, Opset: 13}, z))
}

const benchBatch = 64

func benchSetup(b *testing.B) (*onnxio.Network, *Trace, *Tensor) {
	rng := rand.New(rand.NewPCG(1, 1))
	net := mnistNet(rng)
	in := NewTensor(sh(benchBatch, 784), randSlice(rng, benchBatch*784, 0, 1))
	tr, err := Run(net, []*Tensor{in})
	if err != nil {
		b.Fatal(err)
	}
	return net, tr, in
}

func BenchmarkRun(b *testing.B) {
	net, _, in := benchSetup(b)
	for b.Loop() {
		if _, err := Run(net, []*Tensor{in}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJVPLayer1 seeds every neuron of the second layer (128
// directions), as forward-mode J does per layer.
func BenchmarkJVPLayer1(b *testing.B) {
	net, tr, _ := benchSetup(b)
	z := net.Ops[LayerOp(net, net.Layers[1])].Out
	seed := NewTensor(withP(128, tr.Values[z].Shape), nil)
	for i := 0; i < 128; i++ {
		for r := 0; r < benchBatch; r++ {
			seed.Data[i*benchBatch*128+r*128+i] = 1
		}
	}
	for b.Loop() {
		if _, err := JVP(net, tr, z, seed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVJPAllLayers pulls one cotangent per output component (10)
// back to every layer's Dense output, as reverse-mode J does.
func BenchmarkVJPAllLayers(b *testing.B) {
	net, tr, _ := benchSetup(b)
	cot := NewTensor(withP(10, tr.Outputs()[0].Shape), nil)
	for k := 0; k < 10; k++ {
		for r := 0; r < benchBatch; r++ {
			cot.Data[k*benchBatch*10+r*10+k] = 1
		}
	}
	want := make([]int, len(net.Layers))
	for i, l := range net.Layers {
		want[i] = net.Ops[LayerOp(net, l)].Out
	}
	for b.Loop() {
		if _, err := VJP(net, tr, []*Tensor{cot}, want); err != nil {
			b.Fatal(err)
		}
	}
}
