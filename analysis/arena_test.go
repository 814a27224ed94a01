package analysis

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// TestArenaRecycles: a recycled buffer comes back zeroed, a buffer the
// arena did not hand out is never recycled, and mapped (huge page)
// buffers behave like heap ones.
func TestArenaRecycles(t *testing.T) {
	for _, n := range []int{100, mapMin/8 + 3} { // from the heap; mapped
		a := &arena{}
		x := a.zeros(n)
		for i := range x {
			x[i] = float64(i) + 1
		}
		foreign := make([]float64, n)
		a.put(foreign) // not the arena's: ignored
		a.reset()
		y := a.zeros(n - 1)
		if &y[0] != &x[0] {
			t.Errorf("n=%d: the freed buffer was not reused", n)
		}
		for i, v := range y {
			if v != 0 {
				t.Fatalf("n=%d: recycled element %d is %g, want 0", n, i, v)
			}
		}
		y[0] = 7
		z := a.zeros(n) // y is in use: a new buffer, not foreign
		if &z[0] == &y[0] || &z[0] == &foreign[0] {
			t.Errorf("n=%d: a buffer in use or a foreign one was handed out", n)
		}
		a.put(y)
		a.put(y) // twice: ignored
		w := a.zeros(2)
		if &w[0] != &y[0] || w[0] != 0 {
			t.Errorf("n=%d: a put buffer was not reused zeroed", n)
		}
		if v := a.zeros(2); &v[0] == &w[0] {
			t.Errorf("n=%d: a buffer put twice was handed out twice", n)
		}
		a.close()
	}
}

// TestCollectReuseMatchesFresh: the statistics with the buffers of each
// batch recycled for the next (and large ones in huge pages) are bit for
// bit those with fresh memory for every batch, over batch sizes that end
// in a partial batch, on the bundled LeNet-5, small ViT and MLP, in the
// derivative modes that take buffers from the arena (reverse, probes, the
// loss objective with gradients) and forward mode.
func TestCollectReuseMatchesFresh(t *testing.T) {
	models := filepath.Join("..", "testdata", "models")
	cases := []struct {
		model string
		shape []int // per sample
		opt   StatsOptions
	}{
		{"mnist_cnn.onnx", []int{1, 28, 28}, StatsOptions{AD: ADReverse}},
		{"mnist_cnn.onnx", []int{1, 28, 28}, StatsOptions{Probes: 3, Seed: 5}},
		{"mnist_cnn.onnx", []int{1, 28, 28}, StatsOptions{Objective: ObjLoss, Task: TaskClassification, Grad: true}},
		{"mnist_vit.onnx", []int{1, 28, 28}, StatsOptions{AD: ADReverse}},
		{"mnist_mlp_gemm.onnx", []int{784}, StatsOptions{AD: ADReverse}},
		{"mnist_mlp_gemm.onnx", []int{784}, StatsOptions{AD: ADForward}},
		{"", []int{4}, StatsOptions{AD: ADReverse}}, // aliasChain
	}
	const n = 23
	labels := &Labels{Class: make([]int, n)}
	for i := range labels.Class {
		labels.Class[i] = (3 * i) % 10
	}
	for _, c := range cases {
		var net *onnxio.Network
		if c.model == "" {
			net = aliasChain(rand.New(rand.NewPCG(3, 4)))
		} else {
			net = loadNet(t, filepath.Join(models, c.model))
		}
		rng := rand.New(rand.NewPCG(1, 2))
		data := sliceData{x: randSlice(rng, n*ShapeSize(c.shape), 0, 1), shape: c.shape}
		for _, batch := range []int{8, 5, n} { // 8+8+7, 4x5+3, one batch
			opt := c.opt
			opt.Batch = batch
			if opt.Objective == ObjLoss {
				opt.Labels = labels
			}
			name := c.model + "/" + string(opt.Objective) + opt.AD
			fresh, err := collect(net, data, opt, false)
			if err != nil {
				t.Fatalf("%s batch %d: %v", name, batch, err)
			}
			reused, err := collect(net, data, opt, true)
			if err != nil {
				t.Fatalf("%s batch %d: %v", name, batch, err)
			}
			if fresh.N != n || reused.N != n || fresh.Mode != reused.Mode {
				t.Fatalf("%s batch %d: N %d and %d, modes %s and %s", name, batch, fresh.N, reused.N, fresh.Mode, reused.Mode)
			}
			for i, f := range fresh.Layers {
				r := reused.Layers[i]
				for _, s := range []struct {
					what string
					f, r []float64
				}{{"S0", f.S0, r.S0}, {"S1", f.S1, r.S1}, {"S2", f.S2, r.S2}, {"SumA2", f.SumA2, r.SumA2}, {"Shift", f.Shift, r.Shift}, {"GradW", f.GradW, r.GradW}} {
					if len(s.f) != len(s.r) {
						t.Fatalf("%s batch %d layer %s: %s has %d and %d values", name, batch, f.Layer.Name, s.what, len(s.f), len(s.r))
					}
					for q := range s.f {
						if math.Float64bits(s.f[q]) != math.Float64bits(s.r[q]) {
							t.Fatalf("%s batch %d layer %s: %s[%d] is %v with fresh memory, %v with recycled buffers", name, batch, f.Layer.Name, s.what, q, s.f[q], s.r[q])
						}
					}
				}
			}
		}
	}
}

func loadNet(t *testing.T, path string) *onnxio.Network {
	t.Helper()
	m, err := onnxio.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := net.Err(path); err != nil {
		t.Fatal(err)
	}
	return net
}

// aliasChain is x [N, 4] -> Dense 6 -> Tanh -> Identity -> Dense 3: in
// reverse mode the Identity hands its cotangent buffer on to the Tanh's
// output, and the Tanh's derivative factor is allocated while that
// buffer is live.
func aliasChain(rng *rand.Rand) *onnxio.Network {
	b := newBuilder()
	x := b.input("x", -1, 4)
	z := b.dense(x, 6, 4, randSlice(rng, 24, -1, 1), randSlice(rng, 6, -1, 1))
	h := b.op(onnxio.Op{Kind: onnxio.OpTanh}, z)
	r := b.op(onnxio.Op{Kind: onnxio.OpIdentity}, h)
	return b.outputs(b.dense(r, 3, 6, randSlice(rng, 18, -1, 1), nil))
}
