package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// benchShapes: a square product and the shapes of the analysis: the S1/S2
// statistics product g^T a (op(A) = A^T, short k), the forward product
// x W^T (op(B) = B^T, 256 rows) and the reverse product.
type benchShape struct {
	name           string
	transA, transB bool
	m, n, k        int
}

var benchShapes = []benchShape{
	{"square4096", false, false, 4096, 4096, 4096},
	{"statsTN", true, false, 4096, 4096, 256},
	{"forwardNT", false, true, 256, 4096, 4096},
	{"reverseNN", false, false, 4096, 4096, 2048},
	{"mid512", false, false, 512, 512, 512},
}

// Run with -bench Gemm; -cpu 1,2 gives the one- and two-thread figures.
func BenchmarkSgemm(b *testing.B) {
	s, _ := available()
	for _, kn := range s {
		for _, sh := range benchShapes {
			if kn.name == "generic" && sh.m*sh.n*sh.k > 1<<30 {
				continue // minutes per product
			}
			b.Run(fmt.Sprintf("%s/%s", kn.name, sh.name), func(b *testing.B) {
				old := kern32
				kern32 = kn
				defer func() { kern32 = old }()
				x, y, z := randF32(sh.m*sh.k), randF32(sh.k*sh.n), make([]float32, sh.m*sh.n)
				lda, ldb := sh.strides()
				cpu0 := cpuTime()
				for b.Loop() {
					Sgemm(sh.transA, sh.transB, sh.m, sh.n, sh.k, 1, x, lda, y, ldb, 0, z, sh.n)
				}
				reportFlops(b, sh.m, sh.n, sh.k, cpuTime()-cpu0)
			})
		}
	}
}

func BenchmarkDgemm(b *testing.B) {
	_, d := available()
	for _, kn := range d {
		for _, sh := range benchShapes {
			if kn.name == "generic" && sh.m*sh.n*sh.k > 1<<30 {
				continue
			}
			b.Run(fmt.Sprintf("%s/%s", kn.name, sh.name), func(b *testing.B) {
				old := kern64
				kern64 = kn
				defer func() { kern64 = old }()
				x, y, z := randF64(sh.m*sh.k), randF64(sh.k*sh.n), make([]float64, sh.m*sh.n)
				lda, ldb := sh.strides()
				cpu0 := cpuTime()
				for b.Loop() {
					Dgemm(sh.transA, sh.transB, sh.m, sh.n, sh.k, 1, x, lda, y, ldb, 0, z, sh.n)
				}
				reportFlops(b, sh.m, sh.n, sh.k, cpuTime()-cpu0)
			})
		}
	}
}

func randF32(n int) []float32 {
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.Float64()*2 - 1)
	}
	return s
}

func randF64(n int) []float64 {
	rng := rand.New(rand.NewPCG(uint64(n), 2))
	s := make([]float64, n)
	for i := range s {
		s[i] = rng.Float64()*2 - 1
	}
	return s
}

// reportFlops reports GFLOP/s of wall time and, if known, GFLOP per CPU
// second (per thread: the second falls below the first with idle workers,
// and stays put when other processes take the cores).
func reportFlops(b *testing.B, m, n, k int, cpu time.Duration) {
	flop := 2 * float64(m) * float64(n) * float64(k) * float64(b.N) / 1e9
	b.ReportMetric(flop/b.Elapsed().Seconds(), "GFLOP/s")
	if cpu > 0 {
		b.ReportMetric(flop/cpu.Seconds(), "GFLOP/cpu-s")
	}
}

// strides are the row strides of the stored A and B of a shape.
func (sh benchShape) strides() (lda, ldb int) {
	lda, ldb = sh.k, sh.n
	if sh.transA {
		lda = sh.m
	}
	if sh.transB {
		ldb = sh.k
	}
	return lda, ldb
}
