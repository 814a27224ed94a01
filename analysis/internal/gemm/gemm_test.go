package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// forEachKernel runs f with each kernel this CPU can run forced in turn.
func forEachKernel(t *testing.T, f func(t *testing.T)) {
	s, d := available()
	s0, d0 := kern32, kern64
	defer func() { kern32, kern64 = s0, d0 }()
	for i := range s {
		kern32, kern64 = s[i], d[i]
		t.Run(s[i].name, f)
	}
}

// operands holds a random product problem with padded strides: the
// values of C outside its m x n window are a sentinel that must survive.
type operands struct {
	transA, transB bool
	m, n, k        int
	lda, ldb, ldc  int
	a, b, c, c0    []float64
	alpha, beta    float64
}

const sentinel = 12345.5

func newOperands(rng *rand.Rand, transA, transB bool, m, n, k, pad int, alpha, beta float64, nanC bool) *operands {
	o := &operands{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta}
	ar, ac := stored(transA, m, k)
	br, bc := stored(transB, k, n)
	o.lda, o.ldb, o.ldc = max(1, ac)+pad, max(1, bc)+pad, max(1, n)+pad
	fill := func(rows, cols, ld int) []float64 {
		s := make([]float64, max(0, (rows-1)*ld+cols))
		for i := range s {
			s[i] = float64(float32(rng.Float64()*2 - 1))
		}
		return s
	}
	o.a, o.b = fill(ar, ac, o.lda), fill(br, bc, o.ldb)
	o.c = make([]float64, m*o.ldc)
	for i := range o.c {
		o.c[i] = sentinel
		if i%o.ldc < n {
			o.c[i] = float64(float32(rng.Float64()*2 - 1))
			if nanC {
				o.c[i] = math.NaN()
			}
		}
	}
	o.c0 = append([]float64(nil), o.c...)
	return o
}

func (o *operands) at(x []float64, ld int, trans bool, i, j int) float64 {
	if trans {
		return x[j*ld+i]
	}
	return x[i*ld+j]
}

// check compares got (C after the product) with the float64 reference,
// within tol*eps*sum |alpha a b| + |beta c| per element.
func (o *operands) check(t *testing.T, got []float64, eps float64) {
	t.Helper()
	bad := 0
	for i := range o.m {
		for j := range o.ldc {
			g := got[i*o.ldc+j]
			if j >= o.n {
				if g != sentinel {
					t.Fatalf("C[%d,%d] outside the window changed to %v", i, j, g)
				}
				continue
			}
			var s, mag float64
			for p := range o.k {
				v := o.at(o.a, o.lda, o.transA, i, p) * o.at(o.b, o.ldb, o.transB, p, j)
				s += v
				mag += math.Abs(v)
			}
			want := o.alpha * s
			mag = math.Abs(o.alpha) * mag
			if o.beta != 0 {
				want += o.beta * o.c0[i*o.ldc+j]
				mag += math.Abs(o.beta * o.c0[i*o.ldc+j])
			}
			tol := 4 * float64(o.k+2) * eps * mag
			if !(math.Abs(g-want) <= tol) {
				if bad++; bad < 5 {
					t.Errorf("C[%d,%d] = %v, want %v (tol %.3g)", i, j, g, want, tol)
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d elements wrong", bad)
	}
}

func to32(x []float64) []float32 {
	s := make([]float32, len(x))
	for i, v := range x {
		s[i] = float32(v)
	}
	return s
}

func to64(x []float32) []float64 {
	s := make([]float64, len(x))
	for i, v := range x {
		s[i] = float64(v)
	}
	return s
}

func (o *operands) run32() []float64 {
	c := to32(o.c)
	Sgemm(o.transA, o.transB, o.m, o.n, o.k, float32(o.alpha), to32(o.a), o.lda, to32(o.b), o.ldb, float32(o.beta), c, o.ldc)
	return to64(c)
}

func (o *operands) run64() []float64 {
	c := append([]float64(nil), o.c...)
	Dgemm(o.transA, o.transB, o.m, o.n, o.k, o.alpha, o.a, o.lda, o.b, o.ldb, o.beta, c, o.ldc)
	return c
}

const (
	eps32 = 0x1p-24
	eps64 = 0x1p-53
)

func TestShapes(t *testing.T) {
	sizes := []int{0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129, 257}
	if testing.Short() {
		sizes = []int{0, 1, 3, 16, 17, 33, 65, 129}
	}
	forEachKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		// Each shape once, with transposes, alpha, beta and padding
		// cycling, so that every combination is met without running the
		// full cross product.
		idx := 0
		for _, m := range sizes {
			for _, n := range sizes {
				for _, k := range sizes {
					if m*n*k > 1<<20 && (m+n+k)%2 == 0 {
						continue
					}
					idx++
					tA, tB := idx&1 != 0, idx&2 != 0
					alpha := []float64{1, -0.5, 2, 1}[idx/4%4]
					beta := []float64{0, 1, -0.5, 2}[idx/3%4]
					o := newOperands(rng, tA, tB, m, n, k, idx%3*5, alpha, beta, false)
					o.check(t, o.run32(), eps32)
					o.check(t, o.run64(), eps64)
				}
			}
		}
	})
}

// TestTransposes runs every transpose, alpha and beta combination on a
// product deeper than kc, then every transpose on shapes larger than one
// block in each direction (m over mc, n over nc) and not multiples of any
// block size.
func TestTransposes(t *testing.T) {
	type tcase struct {
		m, n, k     int
		alpha, beta float64
	}
	var cases []tcase
	for _, ab := range [][2]float64{{1, 0}, {-0.5, 1}, {2, -0.5}, {1, 2}, {0, 2}, {0, 0}} {
		cases = append(cases, tcase{37, 45, 300, ab[0], ab[1]})
	}
	if testing.Short() {
		// Still several blocks and threads, at a size the race
		// detector's reference products finish in seconds.
		cases = append(cases, tcase{200, 150, 260, 1, 0})
	} else {
		cases = append(cases, tcase{350, 301, 517, 1, 0}, tcase{700, 45, 300, -0.5, 2}, tcase{29, 4133, 70, 2, 1})
	}
	forEachKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		for _, c := range cases {
			for tr := range 4 {
				tA, tB := tr&1 != 0, tr&2 != 0
				name := fmt.Sprintf("%dx%dx%d/tA=%v/tB=%v/alpha=%v/beta=%v", c.m, c.n, c.k, tA, tB, c.alpha, c.beta)
				o := newOperands(rng, tA, tB, c.m, c.n, c.k, 3, c.alpha, c.beta, false)
				t.Run(name, func(t *testing.T) {
					o.check(t, o.run32(), eps32)
					o.check(t, o.run64(), eps64)
				})
			}
		}
	})
}

// TestBetaZeroNaN: with beta == 0, C is overwritten without being read.
func TestBetaZeroNaN(t *testing.T) {
	forEachKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, sh := range [][3]int{{5, 6, 7}, {100, 90, 80}, {300, 70, 600}} {
			for _, beta := range []float64{0, math.Copysign(0, -1)} {
				o := newOperands(rng, false, true, sh[0], sh[1], sh[2], 2, 1.5, beta, true)
				o.check(t, o.run32(), eps32)
				o.check(t, o.run64(), eps64)
			}
		}
		// alpha == 0 or k == 0 with beta == 0: C = 0.
		for _, k := range []int{0, 9} {
			o := newOperands(rng, false, false, 9, 9, k, 1, 0, 0, true)
			o.check(t, o.run32(), eps32)
			o.check(t, o.run64(), eps64)
		}
	})
}

// TestDeterministic: the same bits whatever GOMAXPROCS.
func TestDeterministic(t *testing.T) {
	forEachKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, sh := range [][3]int{{517, 300, 700}, {20, 1500, 600}, {1000, 40, 300}} {
			o := newOperands(rng, true, false, sh[0], sh[1], sh[2], 0, 1, 0.5, false)
			var r32, r64 [][]float64
			for _, procs := range []int{1, 2, 3, 4} {
				old := runtime.GOMAXPROCS(procs)
				r32 = append(r32, o.run32())
				r64 = append(r64, o.run64())
				runtime.GOMAXPROCS(old)
			}
			for i := 1; i < len(r32); i++ {
				for j := range r32[0] {
					if math.Float64bits(r32[i][j]) != math.Float64bits(r32[0][j]) || math.Float64bits(r64[i][j]) != math.Float64bits(r64[0][j]) {
						t.Fatalf("%v: element %d differs between GOMAXPROCS 1 and %d", sh, j, i+1)
					}
				}
			}
		}
	})
}

func TestPanics(t *testing.T) {
	a := make([]float64, 12)
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"negative", func() { Dgemm(false, false, -1, 2, 2, 1, a, 2, a, 2, 0, a, 2) }},
		{"short a", func() { Dgemm(false, false, 4, 3, 4, 1, a, 4, a, 3, 0, a, 3) }},
		{"short c", func() { Dgemm(false, false, 4, 4, 1, 1, a, 1, a, 4, 0, a, 4) }},
		{"stride", func() { Dgemm(false, false, 2, 3, 2, 1, a, 1, a, 3, 0, a, 3) }},
		{"trans stride", func() { Dgemm(true, false, 3, 2, 2, 1, a, 2, a, 2, 0, a, 2) }},
		{"f32 stride", func() {
			Sgemm(false, true, 2, 2, 3, 1, make([]float32, 6), 3, make([]float32, 6), 2, 0, make([]float32, 4), 2)
		}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", c.name)
				}
			}()
			c.f()
		}()
	}
}

// TestRowInvariance: a row of C gets the same bits whatever the number of
// rows of the product, and a column whatever the number of columns, so
// that results do not depend on the batch size (callers check plans made
// from differently batched products for equality).
func TestRowInvariance(t *testing.T) {
	forEachKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, sh := range [][3]int{{90, 20, 12}, {300, 70, 600}} {
			for _, beta := range []float64{0, 0.75} {
				o := newOperands(rng, false, true, sh[0], sh[1], sh[2], 0, 1, beta, false)
				full32, full64 := o.run32(), o.run64()
				for _, sub := range [][2]int{{1, 1}, {5, 3}, {23, sh[1]}, {sh[0] - 7, sh[1] - 1}} {
					// The first sub[0] rows and sub[1] columns, as a product
					// of their own (A's rows and B's rows are contiguous).
					s := *o
					s.m, s.n, s.ldc = sub[0], sub[1], sub[1]
					s.c = make([]float64, s.m*s.n)
					for i := range s.m {
						copy(s.c[i*s.n:(i+1)*s.n], o.c[i*o.ldc:])
					}
					got32, got64 := s.run32(), s.run64()
					for i := range s.m {
						for j := range s.n {
							if got32[i*s.n+j] != full32[i*o.ldc+j] || got64[i*s.n+j] != full64[i*o.ldc+j] {
								t.Fatalf("%v beta %v: C[%d,%d] of the %dx%d product differs from the full one", sh, beta, i, j, s.m, s.n)
							}
						}
					}
				}
			}
		}
	})
}

// TestPackBT: the assembly packing of B^T against packB, with kc not a
// multiple of the block it transposes.
func TestPackBT(t *testing.T) {
	s, d := available()
	for _, kc := range []int{0, 1, 8, 15, 16, 17, 40, 256} {
		b32, b64 := randF32(32*(kc+5)), randF64(16*(kc+5))
		for _, kn := range s {
			if kn.packBT == nil {
				continue
			}
			want, got := make([]float32, kc*kn.nr), make([]float32, kc*kn.nr)
			packB(true, b32, kc+5, 2, kc, 0, kn.nr, kn.nr, want)
			done := kn.packBT(kc, b32[2:], kc+5, got)
			packB(true, b32, kc+5, 2+done, kc-done, 0, kn.nr, kn.nr, got[done*kn.nr:])
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s float32 kc=%d: element %d = %v, want %v", kn.name, kc, i, got[i], want[i])
				}
			}
		}
		for _, kn := range d {
			if kn.packBT == nil {
				continue
			}
			want, got := make([]float64, kc*kn.nr), make([]float64, kc*kn.nr)
			packB(true, b64, kc+5, 2, kc, 0, kn.nr, kn.nr, want)
			done := kn.packBT(kc, b64[2:], kc+5, got)
			packB(true, b64, kc+5, 2+done, kc-done, 0, kn.nr, kn.nr, got[done*kn.nr:])
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s float64 kc=%d: element %d = %v, want %v", kn.name, kc, i, got[i], want[i])
				}
			}
		}
	}
}
