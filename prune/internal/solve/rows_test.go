package solve

import (
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/internal/tol"
)

// TestMain runs the tests on the products ecprune's CLI uses, whose
// bit-for-bit behaviour the block and subset tests below pin down.
func TestMain(m *testing.M) {
	analysis.UseFastGemm()
	os.Exit(m.Run())
}

// maskedProblem is a layer's reconstruction systems: the Gram matrix of
// [A; 1] (A [in, n] random, one feature constant when dead), cross
// products with random residuals, and a random mask.
type maskedProblem struct {
	gram, c []float64
	pruned  []bool
	out, in int
	lambda  float64
}

func newMaskedProblem(seed uint64, out, in, n int, frac float64, dead bool) *maskedProblem {
	rng := rand.New(rand.NewPCG(seed, 7))
	m := in + 1
	a := make([]float64, m*n)
	for j := 0; j < in; j++ {
		for r := 0; r < n; r++ {
			if !(dead && j == 0) {
				a[j*n+r] = rng.NormFloat64()
			}
		}
	}
	for r := 0; r < n; r++ {
		a[in*n+r] = 1
	}
	e := tol.Normal(rng, out*n)
	p := &maskedProblem{gram: make([]float64, m*m), c: make([]float64, m*out), pruned: make([]bool, out*in), out: out, in: in}
	for j := 0; j < m; j++ {
		for k := 0; k < m; k++ {
			var s float64
			for r := 0; r < n; r++ {
				s += a[j*n+r] * a[k*n+r]
			}
			p.gram[j*m+k] = s
		}
		for i := 0; i < out; i++ {
			var s float64
			for r := 0; r < n; r++ {
				s += a[j*n+r] * e[i*n+r]
			}
			p.c[j*out+i] = s
		}
	}
	for q := range p.pruned {
		p.pruned[q] = rng.Float64() < frac
	}
	var tr float64
	for j := 0; j < in; j++ {
		tr += p.gram[j*m+j]
	}
	p.lambda = 0.01*tr/float64(in) + 1e-12
	return p
}

// bruteRow solves row i's system explicitly: (G_KK + lambda I_K) x_K =
// -c_K over the kept columns and the (undamped) intercept.
func (p *maskedProblem) bruteRow(i int) []float64 {
	m := p.in + 1
	var keep []int
	for j := 0; j < p.in; j++ {
		if !p.pruned[i*p.in+j] {
			keep = append(keep, j)
		}
	}
	keep = append(keep, p.in)
	k := len(keep)
	a := mat.NewDense(k, k, nil)
	b := mat.NewVecDense(k, nil)
	for u, ju := range keep {
		for v, jv := range keep {
			a.Set(u, v, p.gram[ju*m+jv])
		}
		if ju != p.in {
			a.Set(u, u, a.At(u, u)+p.lambda)
		}
		b.SetVec(u, -p.c[ju*p.out+i])
	}
	var sol mat.VecDense
	if err := sol.SolveVec(a, b); err != nil {
		panic(err)
	}
	x := make([]float64, m)
	for u, ju := range keep {
		x[ju] = sol.AtVec(u)
	}
	return x
}

// subset is the problem restricted to the given rows.
func (p *maskedProblem) subset(rows []int) (c []float64, pruned []bool) {
	m := p.in + 1
	ns := len(rows)
	c = make([]float64, m*ns)
	pruned = make([]bool, ns*p.in)
	for k, i := range rows {
		for j := 0; j < m; j++ {
			c[j*ns+k] = p.c[j*p.out+i]
		}
		copy(pruned[k*p.in:(k+1)*p.in], p.pruned[i*p.in:(i+1)*p.in])
	}
	return c, pruned
}

// TestMaskedAgainstBruteForce: whatever the solver (Cholesky per row,
// conjugate gradients all at once or in blocks of rows), run to
// convergence Masked gives every row's explicit solution.
func TestMaskedAgainstBruteForce(t *testing.T) {
	for _, tc := range []struct {
		name            string
		out, in, n      int
		frac            float64
		dead            bool
		exactFlops      float64
		blockBytes      int
		deflate         int
		wantCG, wantBlk bool
	}{
		{"cholesky", 7, 9, 40, 0.4, false, math.Inf(1), 0, 0, false, false},
		{"cholesky, dead input, fewer samples than inputs", 5, 12, 8, 0.3, true, math.Inf(1), 0, 0, false, false},
		{"cg, one block", 7, 9, 40, 0.4, false, 0, 0, 0, true, false},
		{"cg, blocks of 2 rows", 7, 9, 40, 0.4, false, 0, 2 * 5 * 8 * 10, 0, true, true},
		{"cg, blocks of 1 row, dead input", 5, 12, 30, 0.5, true, 0, 1, 0, true, true},
		{"cg, blocks of 3 rows, nothing pruned", 8, 6, 30, 0, false, 0, 3 * 5 * 8 * 7, 0, true, true},
		{"cg deflating 3, one block", 7, 9, 40, 0.4, false, 0, 0, 3, true, false},
		{"cg deflating 4, blocks of 1 row, dead input", 5, 12, 30, 0.5, true, 0, 1, 4, true, true},
		{"cg deflating more than there are inputs, fewer samples than inputs", 5, 12, 8, 0.3, true, 0, 0, 50, true, false},
		{"cg deflating 2, blocks of 3 rows, nothing pruned", 8, 6, 30, 0, false, 0, 3 * 5 * 8 * 7, 2, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newMaskedProblem(1, tc.out, tc.in, tc.n, tc.frac, tc.dead)
			m := tc.in + 1
			x := make([]float64, tc.out*m)
			before := slices.Clone(p.gram)
			how := Masked(p.gram, p.c, tc.out, tc.in, p.pruned, p.lambda, x, MaskedOptions{ExactFlops: tc.exactFlops, CGIter: 2000, CGTol: 1e-13, CGBlockBytes: tc.blockBytes, CGDeflate: tc.deflate})
			if isCG := how != "Cholesky per row"; isCG != tc.wantCG {
				t.Fatalf("solved by %q", how)
			}
			if blk := strings.Contains(how, "blocks of"); blk != tc.wantBlk {
				t.Errorf("blocks: %q", how)
			}
			if !slices.Equal(p.gram, before) {
				t.Error("the Gram matrix changed")
			}
			for i := 0; i < tc.out; i++ {
				tol.CheckClose(t, "row", x[i*m:(i+1)*m], p.bruteRow(i), 1e-7, 1e-9)
				for j := 0; j < tc.in; j++ {
					if p.pruned[i*tc.in+j] && x[i*m+j] != 0 {
						t.Errorf("row %d: pruned weight %d moved by %g", i, j, x[i*m+j])
					}
				}
			}
		})
	}
}

// TestMaskedRowsIndependent: the rows are separate systems, so solving a
// subset of them (with the whole layer's Flops, so that the solver is
// the same) or solving them in blocks gives the very same bits as
// solving all at once, also when the conjugate gradients stop early.
func TestMaskedRowsIndependent(t *testing.T) {
	for _, tc := range []struct {
		name       string
		exactFlops float64
		iter       int
		deflate    int
	}{
		{"cholesky", math.Inf(1), 20, 0},
		{"cg, 5 iterations", 0, 5, 0},
		{"cg, 20 iterations", 0, 20, 0},
		{"cg deflating 3, 4 iterations", 0, 4, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newMaskedProblem(2, 11, 10, 50, 0.5, true)
			m := p.in + 1
			o := MaskedOptions{ExactFlops: tc.exactFlops, CGIter: tc.iter, CGTol: 0, CGDeflate: tc.deflate}
			all := make([]float64, p.out*m)
			Masked(p.gram, p.c, p.out, p.in, p.pruned, p.lambda, all, o)

			rows := []int{0, 3, 4, 10}
			cs, ps := p.subset(rows)
			xs := make([]float64, len(rows)*m)
			so := o
			so.Flops = MaskedFlops(p.out, p.in, p.pruned)
			Masked(p.gram, cs, len(rows), p.in, ps, p.lambda, xs, so)
			for k, i := range rows {
				if !slices.Equal(xs[k*m:(k+1)*m], all[i*m:(i+1)*m]) {
					t.Errorf("row %d alone: %v, with the others %v", i, xs[k*m:(k+1)*m], all[i*m:(i+1)*m])
				}
			}

			for _, block := range []int{1, 3, 4, 10} {
				bo := o
				bo.CGBlockBytes = block * 5 * 8 * m
				xb := make([]float64, p.out*m)
				Masked(p.gram, p.c, p.out, p.in, p.pruned, p.lambda, xb, bo)
				if !slices.Equal(xb, all) {
					t.Errorf("blocks of %d rows differ from one solve", block)
				}
			}
		})
	}
}

// TestMaskedCGSplitAndScratch: the conjugate gradients give the same bits
// whether their element-wise passes run on one goroutine or are split by
// rows over several, and whether their vectors are fresh or come from a
// scratch a larger solve left dirty, in one block or several.
func TestMaskedCGSplitAndScratch(t *testing.T) {
	for _, deflate := range []int{0, 8} {
		testMaskedCGSplitAndScratch(t, deflate)
	}
}

func testMaskedCGSplitAndScratch(t *testing.T, deflate int) {
	// m*out above the split's threshold.
	p := newMaskedProblem(5, 300, 250, 300, 0.5, true)
	m := p.in + 1
	o := MaskedOptions{ExactFlops: 0, CGIter: 12, CGTol: 0, CGDeflate: deflate}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	want := make([]float64, p.out*m)
	Masked(p.gram, p.c, p.out, p.in, p.pruned, p.lambda, want, o)

	dirty := &CGScratch{}
	for _, v := range dirty.floats(5, 2*m*p.out) {
		for q := range v {
			v[q] = math.NaN()
		}
	}
	for _, tc := range []struct {
		name    string
		procs   int
		scratch *CGScratch
		block   int
	}{
		{"split over 3", 3, nil, 0},
		{"split over 2, dirty scratch", 2, dirty, 0},
		{"one goroutine, dirty scratch, blocks of 70 rows", 1, dirty, 70},
		{"split over 4, dirty scratch, blocks of 70 rows", 4, dirty, 70},
	} {
		runtime.GOMAXPROCS(tc.procs)
		so := o
		so.Scratch = tc.scratch
		so.CGBlockBytes = tc.block * 5 * 8 * m
		got := make([]float64, p.out*m)
		Masked(p.gram, p.c, p.out, p.in, p.pruned, p.lambda, got, so)
		for q := range got {
			if math.Float64bits(got[q]) != math.Float64bits(want[q]) {
				t.Errorf("deflating %d, %s: x[%d] = %v, one goroutine with fresh vectors %v", deflate, tc.name, q, got[q], want[q])
				break
			}
		}
	}
}

// TestMaskedCGDeflationConverges: on inputs sharing a few strong common
// components (as a layer's activations do), deflating them leaves a
// lower residual after a few iterations than Jacobi alone, and the
// solutions are closer to the explicit ones.
func TestMaskedCGDeflationConverges(t *testing.T) {
	p := newMaskedProblem(3, 20, 60, 200, 0.5, false)
	// Make the inputs correlated: add to the Gram matrix of A that of
	// A's projection on 3 random directions, scaled up (the cross
	// products stay random right-hand sides).
	rng := rand.New(rand.NewPCG(9, 1))
	m := p.in + 1
	for k := 0; k < 3; k++ {
		u := make([]float64, p.in)
		for j := range u {
			u[j] = rng.NormFloat64()
		}
		scale := 400.0 * float64(3-k)
		for j := 0; j < p.in; j++ {
			for l := 0; l < p.in; l++ {
				p.gram[j*m+l] += scale * u[j] * u[l]
			}
		}
	}
	var tr float64
	for j := 0; j < p.in; j++ {
		tr += p.gram[j*m+j]
	}
	p.lambda = 0.01 * tr / float64(p.in)
	errAfter := func(deflate int) (float64, string) {
		x := make([]float64, p.out*m)
		how := Masked(p.gram, p.c, p.out, p.in, p.pruned, p.lambda, x, MaskedOptions{CGIter: 8, CGDeflate: deflate})
		var e float64
		for i := 0; i < p.out; i++ {
			for j, v := range p.bruteRow(i) {
				e = math.Max(e, math.Abs(x[i*m+j]-v)/(1+math.Abs(v)))
			}
		}
		return e, how
	}
	jac, howJ := errAfter(0)
	defl, howD := errAfter(6)
	if !strings.Contains(howD, "6 directions deflated") || strings.Contains(howJ, "deflated") {
		t.Errorf("reports %q, %q", howJ, howD)
	}
	if !(defl < jac/5) {
		t.Errorf("after 8 iterations: error %.3g deflating, %.3g with Jacobi alone (%s; %s)", defl, jac, howD, howJ)
	}
}
