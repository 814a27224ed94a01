package analysis

// Benchmarks of the ec analysis on the three benchmark models of
// bench/README.md, and of the matrix products. They report GFLOP/s against
// the operation count of the algorithm and the process's peak RSS; they
// assert nothing about time. The whole-process figures and the comparison
// with PyTorch come from bench/run.sh.
//
//	go test ./analysis -run '^$' -bench . -benchtime 1x
//	CGO_LDFLAGS=-lopenblas OPENBLAS_CORETYPE=SkylakeX go test -tags openblas ./analysis -run '^$' -bench .

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels"
)

// sharedDir is the shared folder (models/, data/), ../../shared from here
// unless ECPRUNE_SHARED says otherwise.
func sharedDir() string {
	if d := os.Getenv("ECPRUNE_SHARED"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "shared")
}

func loadBenchNet(b *testing.B, path string) *onnxio.Network {
	b.Helper()
	m, err := onnxio.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := net.Err(path); err != nil {
		b.Fatal(err)
	}
	return net
}

// bigNet writes testmodels.BigMLP(sizes) to a temporary folder and loads it.
func bigNet(b *testing.B, sizes ...int64) *onnxio.Network {
	b.Helper()
	p, err := testmodels.BigMLP(sizes...).Write(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return loadBenchNet(b, p)
}

// digits are the 1000 MNIST calibration digits, or 1000 uniform [0, 1)
// samples when the shared data is not there.
func digits(b *testing.B) sliceData {
	b.Helper()
	x, err := readNpyF32(filepath.Join(sharedDir(), "data", "mnist", "calib_x.npy"), 784)
	if err != nil {
		b.Logf("no MNIST digits (%v): uniform samples instead", err)
		rng := rand.New(rand.NewPCG(2, 2))
		x = randSlice(rng, 1000*784, 0, 1)
	}
	return sliceData{x: x, shape: []int{784}}
}

// readNpyF32 reads a little-endian float32 C-order [N, w] .npy.
func readNpyF32(path string, w int) ([]float64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) < 10 || string(raw[:6]) != "\x93NUMPY" {
		return nil, os.ErrInvalid
	}
	hl := int(binary.LittleEndian.Uint16(raw[8:10]))
	body := raw[10+hl:]
	x := make([]float64, len(body)/4)
	for i := range x {
		x[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:])))
	}
	if len(x)%w != 0 {
		return nil, os.ErrInvalid
	}
	return x, nil
}

// flopCount is the operation count of the analysis on a chain of dense
// layers (bench/ecbench/analyze.go has the same formula): forward
// 2 N sum In*Out, reverse 2 D N sum_{after the first prunable} In*Out,
// S1 and S2 4 N sum_{prunable} In*Out.
func flopCount(net *onnxio.Network, n, dirs int) float64 {
	var f float64
	first := -1
	for i, l := range net.Layers {
		s := float64(l.In) * float64(l.Out)
		f += 2 * float64(n) * s
		if l.Prunable {
			f += 4 * float64(n) * s
			if first < 0 {
				first = i
			}
		}
		if first >= 0 && i > first {
			f += 2 * float64(dirs) * float64(n) * s
		}
	}
	return f
}

func peakRSSMiB() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024 // Linux: KiB
}

func benchCollect(b *testing.B, net *onnxio.Network, data Data, opt StatsOptions, dirs int) {
	b.Helper()
	b.ResetTimer()
	for range b.N {
		st, err := Collect(net, data, opt)
		if err != nil {
			b.Fatal(err)
		}
		for _, ls := range st.Layers {
			ls.ECImportance(st.N)
		}
	}
	b.StopTimer()
	flops := flopCount(net, data.Len(), dirs)
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	b.ReportMetric(peakRSSMiB(), "peak-RSS-MiB")
	b.ReportMetric(0, "ns/op") // the time per op is the wall time, shown as sec/op below
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/op")
}

// BenchmarkCollectA: (a) the shared MNIST MLP 784-300-100-10, 1000 digits,
// exact reverse mode (K = 10), float64.
func BenchmarkCollectA(b *testing.B) {
	path := filepath.Join(sharedDir(), "models", "mnist_mlp_gemm.onnx")
	if _, err := os.Stat(path); err != nil {
		path = filepath.Join("..", "testdata", "models", "mnist_mlp_gemm.onnx")
	}
	net := loadBenchNet(b, path)
	benchCollect(b, net, digits(b), StatsOptions{Batch: 256}, 10)
}

// BenchmarkCollectB: (b) testmodels.BigMLP(784, 1024, 1024, 10), 1000
// digits, exact reverse mode, float64.
func BenchmarkCollectB(b *testing.B) {
	net := bigNet(b, 784, 1024, 1024, 10)
	benchCollect(b, net, digits(b), StatsOptions{Batch: 256}, 10)
}

// BenchmarkCollectC: (c) the untrained 1024-4096-4096-4096-1024 MLP (42M
// parameters), 256 standard-normal samples (bench/run.sh runs 512 to
// 4096), 16 probes (float32 products, float64 sums).
func BenchmarkCollectC(b *testing.B) {
	if testing.Short() {
		b.Skip("168 MB model")
	}
	net := bigNet(b, 1024, 4096, 4096, 4096, 1024)
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float64, 256*1024)
	for i := range x {
		x[i] = float64(float32(rng.NormFloat64()))
	}
	benchCollect(b, net, sliceData{x: x, shape: []int{1024}}, StatsOptions{Batch: 256, Probes: 16}, 16)
}

// BenchmarkMatmul: the products of the analysis of (c) at one batch of
// 256 samples and 16 probes: the reverse product (4096 x 4096 weights,
// P*N = 4096 rows) and the S1 product (g^T a), in float64 and float32.
func BenchmarkMatmul(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, c := range []struct {
		name    string
		ta, tb  bool
		m, n, k int
		mm      matmulFunc
	}{
		{"reverse64", false, false, 4096, 4096, 4096, matmul},
		{"reverse32", false, false, 4096, 4096, 4096, matmul32},
		{"stats64", true, false, 4096, 4096, 256, matmul},
		{"stats32", true, false, 4096, 4096, 256, matmul32},
		{"stats32NN", false, false, 4096, 4096, 256, matmul32},
		{"forward64", false, true, 256, 4096, 4096, matmul},
		{"forward32", false, true, 256, 4096, 4096, matmul32},
	} {
		b.Run(c.name, func(b *testing.B) {
			a := randSlice(rng, c.m*c.k, -1, 1)
			w := randSlice(rng, c.k*c.n, -1, 1)
			out := make([]float64, c.m*c.n)
			b.ResetTimer()
			for range b.N {
				c.mm(c.ta, c.tb, c.m, c.n, c.k, a, w, out, 1)
			}
			b.ReportMetric(2*float64(c.m)*float64(c.n)*float64(c.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// TestFloat32Reverse checks the float32 reverse pass of probe estimates
// against the float64 one on the same sign cotangents, and that a graph
// it does not handle (a residual Add) is left to the float64 path.
func TestFloat32Reverse(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	bl := newBuilder()
	x0 := bl.input("x", -1, 20)
	h := bl.op(onnxio.Op{Kind: onnxio.OpRelu}, bl.dense(x0, 30, 20, randSlice(rng, 600, -0.4, 0.4), randSlice(rng, 30, -0.1, 0.1)))
	h = bl.op(onnxio.Op{Kind: onnxio.OpTanh}, bl.dense(h, 25, 30, randSlice(rng, 750, -0.4, 0.4), randSlice(rng, 25, -0.1, 0.1)))
	net := bl.outputs(bl.dense(h, 6, 25, randSlice(rng, 150, -0.4, 0.4), nil))
	tr := mustRun(t, net, NewTensor([]int{7, 20}, randSlice(rng, 7*20, -1, 1)))
	var want []int
	for _, op := range net.Ops {
		if op.Kind == onnxio.OpDense {
			want = append(want, op.Out)
		}
	}
	const p = 3
	outs := tr.Outputs()
	cot64 := make([]*Tensor, len(outs))
	cot32 := make([][]float32, len(outs))
	for o, out := range outs {
		cot64[o] = Zeros(append([]int{p}, out.Shape...)...)
		cot32[o] = make([]float32, p*out.Len())
		for q := range cot32[o] {
			v := float64(1 - 2*int(rng.Uint64()&1))
			cot64[o].Data[q], cot32[o][q] = v, float32(v)
		}
	}
	r64, err := VJP(net, tr, cot64, want)
	if err != nil {
		t.Fatal(err)
	}
	r32, ok := vjp32(net, tr, cot32, p, want)
	if !ok {
		t.Fatal("vjp32 refused a dense chain")
	}
	for _, id := range want {
		got := make([]float64, len(r32[id]))
		for q, v := range r32[id] {
			got[q] = float64(v)
		}
		if e := relTo(got, r64[id].Data); e > 1e-5 {
			t.Errorf("value %d: float32 reverse pass off by %.3g relative", id, e)
		}
	}
	res := bruteNets()["residual"](rng)
	rtr := mustRun(t, res, NewTensor([]int{2, 3}, randSlice(rng, 6, -1, 1)))
	var rw []int
	for _, op := range res.Ops {
		if op.Kind == onnxio.OpDense {
			rw = append(rw, op.Out)
		}
	}
	rc := make([][]float32, len(rtr.Outputs()))
	for o, out := range rtr.Outputs() {
		rc[o] = make([]float32, out.Len())
	}
	if _, ok := vjp32(res, rtr, rc, 1, rw); ok {
		t.Error("vjp32 accepted a graph with a residual Add")
	}
}
