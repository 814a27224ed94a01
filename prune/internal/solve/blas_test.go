package solve

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/ecprune/ecprune/internal/tol"
)

// TestGram compares the Gram product with a direct one, whole matrix.
func TestGram(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{1, 3, 63, 64, 65, 130} {
		for _, rows := range []int{0, 1, 7, 100} {
			a := tol.Normal(rng, rows*n)
			c := tol.Normal(rng, n*n)
			for i := 0; i < n; i++ { // Gram accumulates into a symmetric matrix
				for j := 0; j < i; j++ {
					c[i*n+j] = c[j*n+i]
				}
			}
			want := append([]float64(nil), c...)
			for i := 0; i < n; i++ {
				for j := 0; j < n; j++ {
					var v float64
					for k := 0; k < rows; k++ {
						v += a[k*n+i] * a[k*n+j]
					}
					want[i*n+j] += 0.5 * v
				}
			}
			Gram(0.5, a, rows, n, c)
			for q := range c {
				if !tol.Near(c[q], want[q], 1e-12, 1e-12) {
					t.Fatalf("n %d rows %d: c[%d,%d] = %g, want %g", n, rows, q/n, q%n, c[q], want[q])
				}
			}
		}
	}
}

// TestGramBits: the triangle in blocks gives the bits of the whole
// product, for blocks that split the columns evenly, unevenly, or not
// at all, and symmetric bits.
func TestGramBits(t *testing.T) {
	defer func(b int) { gramBlock = b }(gramBlock)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, tc := range []struct{ rows, n, block int }{
		{1, 1, 256}, {7, 5, 2}, {100, 65, 16}, {300, 130, 48}, {500, 700, 256}, {2560, 530, 256},
	} {
		gramBlock = tc.block
		a := tol.Normal(rng, tc.rows*tc.n)
		c0 := tol.Normal(rng, tc.n*tc.n)
		for i := 0; i < tc.n; i++ { // Gram accumulates into a symmetric matrix
			for j := 0; j < i; j++ {
				c0[i*tc.n+j] = c0[j*tc.n+i]
			}
		}
		want := append([]float64(nil), c0...)
		blas64.Gemm(blas.Trans, blas.NoTrans, 0.25,
			blas64.General{Rows: tc.rows, Cols: tc.n, Stride: tc.n, Data: a},
			blas64.General{Rows: tc.rows, Cols: tc.n, Stride: tc.n, Data: a},
			1, blas64.General{Rows: tc.n, Cols: tc.n, Stride: tc.n, Data: want})
		got := append([]float64(nil), c0...)
		Gram(0.25, a, tc.rows, tc.n, got)
		for q := range got {
			if math.Float64bits(got[q]) != math.Float64bits(want[q]) {
				t.Fatalf("rows %d n %d block %d: c[%d,%d] = %v, whole product %v", tc.rows, tc.n, tc.block, q/tc.n, q%tc.n, got[q], want[q])
			}
		}
	}
}
