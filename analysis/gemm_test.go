package analysis

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestMatmul checks every transpose combination, accumulation (beta) and
// degenerate sizes against a naive triple loop.
func TestMatmul(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, sz := range [][3]int{{1, 1, 1}, {3, 5, 4}, {7, 2, 9}, {0, 3, 2}, {3, 0, 2}, {3, 2, 0}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, beta := range []float64{0, 1, 0.5} {
					t.Run(fmt.Sprintf("%dx%dx%d/%v%v/%v", m, n, k, ta, tb, beta), func(t *testing.T) {
						a, b := randSlice(rng, m*k, -1, 1), randSlice(rng, k*n, -1, 1)
						c := randSlice(rng, m*n, -1, 1)
						want := make([]float64, m*n)
						for i := 0; i < m; i++ {
							for j := 0; j < n; j++ {
								s := beta * c[i*n+j]
								for l := 0; l < k; l++ {
									av, bv := a[i*k+l], b[l*n+j]
									if ta {
										av = a[l*m+i]
									}
									if tb {
										bv = b[j*k+l]
									}
									s += av * bv
								}
								want[i*n+j] = s
							}
						}
						matmul(ta, tb, m, n, k, a, b, c, beta)
						checkClose(t, "c", c, want, 1e-13, 1e-14)
					})
				}
			}
		}
	}
}
