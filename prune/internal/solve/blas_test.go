package solve

import (
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/internal/tol"
)

// TestGram compares the Gram product with a direct one, whole matrix.
func TestGram(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{1, 3, 63, 64, 65, 130} {
		for _, rows := range []int{0, 1, 7, 100} {
			a := tol.Normal(rng, rows*n)
			c := tol.Normal(rng, n*n)
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
