package solve

import (
	"testing"

	"github.com/ecprune/ecprune/internal/tol"
)

// TestDenseSolve: the damped system is solved exactly when it is
// positive definite, and by more damping then a diagonal solve when not.
func TestDenseSolve(t *testing.T) {
	g := []float64{4, 1, 0, 1, 3, 0.5, 0, 0.5, 2}
	grad := []float64{1, -2, 0.5}
	const mu = 0.1
	x, err := NewDense(g, 3).Solve(grad, mu)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // (G + mu diag(G)) x = -grad
		var v float64
		for j := 0; j < 3; j++ {
			v += g[i*3+j] * x[j]
		}
		v += mu * g[i*3+i] * x[i]
		if !tol.Near(v, -grad[i], 1e-12, 1e-12) {
			t.Errorf("row %d: %g, want %g", i, v, -grad[i])
		}
	}
	// Indefinite even with mu raised four times (to 10): diagonal.
	ind := []float64{1, 10, 10, 1}
	x, err = NewDense(ind, 2).Solve([]float64{1, 2}, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	tol.CheckClose(t, "diagonal fallback", x, []float64{-1.0 / 11, -2.0 / 11}, 1e-12, 0)
}
