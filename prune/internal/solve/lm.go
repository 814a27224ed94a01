package solve

import (
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/lapack/lapack64"
)

// Damped solves (G + mu D) d = -grad for one linearisation of a
// Levenberg-Marquardt step: G the (generalised) Gauss-Newton matrix, D a
// scaling fixed by the solver, mu the damping. One value serves every
// damping a step tries.
type Damped interface {
	Solve(grad []float64, mu float64) ([]float64, error)
	// Predicted is the drop of the objective the Gauss-Newton model
	// predicts for step d, -(grad.d + d.G d / 2), if it is cheap to know.
	Predicted(grad, d []float64) (float64, bool)
}

// Dense is an assembled Gauss-Newton matrix G [n, n] (stored whole, as
// Gram computes it) with Marquardt's scaling D = diag(G), floored at 1% of
// its mean: parameters the outputs barely see would otherwise be almost
// undamped and take huge, harmful steps along G's near-null directions.
// Solve factors G + mu D by Cholesky (LAPACK's, through gonum).
type Dense struct {
	g []float64
	n int
}

// NewDense wraps g [n, n]; g is not copied.
func NewDense(g []float64, n int) *Dense { return &Dense{g: g, n: n} }

// Matrix is G, [n, n] row-major (not a copy).
func (f *Dense) Matrix() []float64 { return f.g }

// Predicted is -(grad.d + d.G d / 2).
func (f *Dense) Predicted(grad, d []float64) (float64, bool) {
	// G is stored whole (Gram computes every entry).
	var dgd float64
	for i := 0; i < f.n; i++ {
		dgd += d[i] * floats.Dot(f.g[i*f.n:(i+1)*f.n], d)
	}
	return -(floats.Dot(grad, d) + dgd/2), true
}

// scaling is Marquardt's D: diag(G), floored at 1% of its mean.
func (f *Dense) scaling() []float64 {
	n := f.n
	d := make([]float64, n)
	var mean float64
	for i := range d {
		mean += f.g[i*n+i] / float64(n)
	}
	for i := range d {
		d[i] = math.Max(f.g[i*n+i], 0.01*mean)
		if d[i] == 0 {
			d[i] = 1
		}
	}
	return d
}

// Solve factors G + mu D; where that fails in floating point it tries
// again with ten times the damping (four tries in all), then falls back
// to the diagonal.
func (f *Dense) Solve(grad []float64, mu float64) ([]float64, error) {
	n := f.n
	d := f.scaling()
	a := make([]float64, n*n)
	x := make([]float64, n)
	for try := 0; try < 4; try++ {
		copy(a, f.g)
		for i := range d {
			a[i*n+i] += mu * d[i]
		}
		// LAPACK's factorisation directly: mat.Cholesky would also
		// estimate the condition number, which costs about as much. An
		// ill-conditioned solve is still a step; the objective test
		// accepts or rejects it.
		t, ok := lapack64.Potrf(blas64.Symmetric{Uplo: blas.Upper, N: n, Stride: n, Data: a})
		if ok {
			for i, v := range grad {
				x[i] = -v
			}
			lapack64.Potrs(t, blas64.General{Rows: n, Cols: 1, Stride: 1, Data: x})
			if finite(x) {
				return x, nil
			}
		}
		mu = math.Max(mu*10, 1e-6) // not positive definite in floating point: damp more
	}
	clear(x)
	for i, v := range grad {
		if den := f.g[i*n+i] + mu*d[i]; den > 0 {
			x[i] = -v / den
		}
	}
	return x, nil
}

// Scaled solves Dense's system (G + mu D) x = -grad with the same D, as
// (D^-1/2 G D^-1/2 + mu I) y = -D^-1/2 grad, x = D^-1/2 y: the shifts are
// then multiples of the identity, so one Lanczos basis serves every
// damping (Lanczos on the explicit matrix). A factorisation per damping
// costs n^3/3, a basis vector n^2, once per linearisation.
type Scaled struct {
	f  *Dense
	dh []float64 // D^1/2
	k  *Lanczos
}

// NewScaled solves f's system with a Lanczos basis of at most dim vectors.
func NewScaled(f *Dense, dim int) *Scaled {
	d := f.scaling()
	dh := make([]float64, len(d))
	for i, v := range d {
		dh[i] = math.Sqrt(v)
	}
	k := &Scaled{f: f, dh: dh}
	n := f.n
	k.k = &Lanczos{Scale: 1, Dim: dim, Mul: func(v []float64) ([]float64, error) {
		u := make([]float64, n)
		for i, x := range v {
			u[i] = x / dh[i]
		}
		w := make([]float64, n)
		blas64.Gemv(blas.NoTrans, 1, blas64.General{Rows: n, Cols: n, Stride: n, Data: f.g},
			blas64.Vector{N: n, Inc: 1, Data: u}, 0, blas64.Vector{N: n, Inc: 1, Data: w})
		for i := range w {
			w[i] /= dh[i]
		}
		return w, nil
	}}
	return k
}

// Solve solves in the scaled coordinates and scales back.
func (k *Scaled) Solve(grad []float64, mu float64) ([]float64, error) {
	gt := make([]float64, len(grad))
	for i, g := range grad {
		gt[i] = g / k.dh[i]
	}
	y, err := k.k.Solve(gt, mu)
	if err != nil {
		return nil, err
	}
	for i := range y {
		y[i] /= k.dh[i]
	}
	return y, nil
}

// Predicted is Dense.Predicted.
func (k *Scaled) Predicted(grad, d []float64) (float64, bool) { return k.f.Predicted(grad, d) }

// Lanczos solves the damped system with G known only through products
// G v (Mul): a Lanczos basis of the Krylov space of G and grad, built on
// the first Solve, serves every damping the step tries (the space does not
// depend on the shift, and the Galerkin solution on it is what conjugate
// gradients would reach for that shift in as many iterations). D is the
// identity times Scale (G's scale, e.g. its Rayleigh quotient on grad).
// gonum has no shifted Krylov solver that reuses a basis across shifts.
type Lanczos struct {
	Mul   func(v []float64) ([]float64, error) // the operator G
	Dim   int                                  // largest basis (at least 1)
	Scale float64

	q     [][]float64 // orthonormal basis q_1..q_m
	alpha []float64   // T's diagonal
	beta  []float64   // T's off-diagonal (beta[j] couples q_j and q_j+1)
	norm  float64     // ||grad||
	built bool
}

// Basis is the number of Lanczos vectors built so far.
func (f *Lanczos) Basis() int { return len(f.q) }

// Predicted would cost a product G d (for a matrix-free G, a pass over
// data): not offered.
func (f *Lanczos) Predicted(grad, d []float64) (float64, bool) { return 0, false }

// build runs Lanczos from grad, with full reorthogonalisation (the basis
// is small: at most Dim vectors of the parameters' size), until Dim
// vectors, an invariant subspace, or a residual below 1e-6 of ||grad|| for
// the smallest damping mu (larger ones converge faster).
func (f *Lanczos) build(grad []float64, mu float64) error {
	f.built = true
	f.norm = math.Sqrt(dot(grad, grad))
	if f.norm == 0 {
		return nil
	}
	n := len(grad)
	q := make([]float64, n)
	for i, g := range grad {
		q[i] = -g / f.norm
	}
	mul, dim := f.Mul, max(f.Dim, 1)
	for j := 0; j < min(n, dim); j++ {
		f.q = append(f.q, q)
		w, err := mul(q)
		if err != nil {
			return err
		}
		a := dot(q, w)
		f.alpha = append(f.alpha, a)
		for pass := 0; pass < 2; pass++ {
			for _, qk := range f.q {
				c := dot(qk, w)
				for i := range w {
					w[i] -= c * qk[i]
				}
			}
		}
		b := math.Sqrt(dot(w, w))
		if b <= 1e-12*math.Abs(a) || b == 0 {
			break // invariant subspace: the solution is exact on it
		}
		if y := f.tri(mu * f.Scale); b*math.Abs(y[len(y)-1]) <= 1e-6*f.norm {
			break
		}
		f.beta = append(f.beta, b)
		for i := range w {
			w[i] /= b
		}
		q = w
	}
	return nil
}

// tri solves (T + s I) y = ||grad|| e1 on the current basis (Thomas'
// algorithm: T + s I is symmetric positive definite for s > 0).
func (f *Lanczos) tri(s float64) []float64 {
	m := len(f.alpha)
	c := make([]float64, m) // modified super-diagonal
	y := make([]float64, m)
	y[0] = f.norm
	for j := 0; j < m; j++ {
		d := f.alpha[j] + s
		if j > 0 {
			d -= f.beta[j-1] * c[j-1]
			y[j] -= f.beta[j-1] * y[j-1]
		}
		if j < m-1 {
			c[j] = f.beta[j] / d
		}
		y[j] /= d
	}
	for j := m - 2; j >= 0; j-- {
		y[j] -= c[j] * y[j+1]
	}
	return y
}

// Solve builds the basis on the first call (stopping early where mu's
// solution has converged) and solves T + mu Scale I on it.
func (f *Lanczos) Solve(grad []float64, mu float64) ([]float64, error) {
	if !f.built {
		if err := f.build(grad, mu); err != nil {
			return nil, err
		}
	}
	x := make([]float64, len(grad))
	if f.norm == 0 {
		return x, nil
	}
	y := f.tri(mu * f.Scale)
	for j, qj := range f.q[:len(y)] {
		for i, v := range qj {
			x[i] += y[j] * v
		}
	}
	return x, nil
}

func finite(v []float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

func dot(a, b []float64) float64 {
	var s float64
	for i, x := range a {
		s += x * b[i]
	}
	return s
}
