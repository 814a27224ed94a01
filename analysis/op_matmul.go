package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas/blas64"

	"github.com/ecprune/ecprune/onnxio"
)

// Products that are not dense layers: MatMul of two activations (or with
// a constant that is not a [in,out] weight: a batched one, or the first
// operand), with numpy's batching and broadcasting, and Gemm in general
// (transA, a C of any broadcastable shape). Every product goes through
// the package's GEMM; small batched products run in parallel over the
// batch, since the GEMM parallelises only large ones.

func init() {
	register("MatMul", &Kernel{Forward: matMulForward, Prepare: matMulPrepare, JVP: matMulJVP, VJP: matMulVJP})
	register("Gemm", &Kernel{Check: checkGemm, Forward: gemmForward, JVP: gemmJVP, VJP: gemmVJP})
}

// mmPlan is a batched product C[s] = A[s] B[s] over the broadcast batch:
// element offsets of every slice's operands and result.
type mmPlan struct {
	m, n, k          int
	shape            []int // output shape
	offA, offB, offC []int
	// fold: B is one matrix and A's slices follow each other, so the whole
	// batch is one product of S·m rows.
	fold         bool
	uniqA, uniqB bool // every slice of A (B) is read by one output slice only
}

func planMatMul(as, bs []int) (*mmPlan, error) {
	if len(as) == 0 || len(bs) == 0 {
		return nil, fmt.Errorf("MatMul of a scalar")
	}
	// 1-D operands are promoted to matrices and their axis dropped after.
	a, b := as, bs
	if len(a) == 1 {
		a = []int{1, a[0]}
	}
	if len(b) == 1 {
		b = []int{b[0], 1}
	}
	m, k := a[len(a)-2], a[len(a)-1]
	k2, n := b[len(b)-2], b[len(b)-1]
	if k != k2 {
		return nil, fmt.Errorf("shapes %s and %s: inner dimensions %d and %d differ", plain.Shape(as), plain.Shape(bs), k, k2)
	}
	ab, bb := a[:len(a)-2], b[:len(b)-2]
	batch, err := BroadcastShape(ab, bb)
	if err != nil {
		return nil, fmt.Errorf("batch dimensions: %w", err)
	}
	shape := append([]int(nil), batch...)
	if len(as) > 1 {
		shape = append(shape, m)
	}
	if len(bs) > 1 {
		shape = append(shape, n)
	}
	s := ShapeSize(batch)
	p := &mmPlan{m: m, n: n, k: k, shape: shape, offA: make([]int, s), offB: make([]int, s), offC: make([]int, s)}
	ia, ib := bcastPos(batch, ab), bcastPos(batch, bb)
	for i := range s {
		p.offA[i], p.offB[i], p.offC[i] = ia[i]*m*k, ib[i]*k*n, i*m*n
	}
	p.uniqA, p.uniqB = ShapeSize(ab) == s, ShapeSize(bb) == s
	p.fold = ShapeSize(bb) == 1 && p.uniqA
	return p, nil
}

// bmm sets c[offC[s]] = op(a[offA[s]]) op(b[offB[s]]) + beta c[offC[s]]
// (m x n results) for every slice; par allows running slices at once
// (their results must not overlap).
func bmm(ta, tb bool, m, n, k int, a []float64, offA []int, b []float64, offB []int, c []float64, offC []int, beta float64, par bool) {
	one := func(s int) { matmul(ta, tb, m, n, k, a[offA[s]:], b[offB[s]:], c[offC[s]:], beta) }
	w := runtime.GOMAXPROCS(0)
	if !par || len(offC) < 2 || w == 1 || m*n*k >= 1<<21 || len(offC)*m*n*k < 1<<15 {
		for s := range offC {
			one(s)
		}
		return
	}
	var wg sync.WaitGroup
	step := (len(offC) + w - 1) / w
	for lo := 0; lo < len(offC); lo += step {
		hi := min(len(offC), lo+step)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := lo; s < hi; s++ {
				one(s)
			}
		}()
	}
	wg.Wait()
}

// product sets c = a b (+ beta c) over the plan's batch.
func (p *mmPlan) product(a, b, c []float64, beta float64) {
	if p.fold {
		matmul(false, false, len(p.offA)*p.m, p.n, p.k, a, b, c, beta)
		return
	}
	bmm(false, false, p.m, p.n, p.k, a, p.offA, b, p.offB, c, p.offC, beta, true)
}

func matMulOperands(in []*Tensor) (*Tensor, *Tensor, error) {
	a, b, err := need2(in)
	if err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

func matMulForward(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
	a, b, err := matMulOperands(in)
	if err != nil {
		return nil, err
	}
	p, err := planMatMul(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	out := NewTensor(p.shape, nil)
	p.product(a.Data, b.Data, out.Data, 0)
	return out, nil
}

func matMulPrepare(_ *onnxio.Op, in []*Tensor, _ *Tensor) (any, error) {
	a, b, err := matMulOperands(in)
	if err != nil {
		return nil, err
	}
	return planMatMul(a.Shape, b.Shape)
}

// matMulJVP: dC = dA B + A dB.
func matMulJVP(_ *onnxio.Op, in []*Tensor, out *Tensor, st any, tin []*Tensor) (*Tensor, error) {
	p := st.(*mmPlan)
	t := NewTensor(out.Shape, nil)
	beta := 0.0
	if tin[0] != nil {
		p.product(tin[0].Data, in[1].Data, t.Data, 0)
		beta = 1
	}
	if tin[1] != nil {
		p.product(in[0].Data, tin[1].Data, t.Data, beta)
	}
	return t, nil
}

// matMulVJP: gA += g Bᵀ and gB += Aᵀ g, summed over the slices that read
// a broadcast operand.
func matMulVJP(_ *onnxio.Op, in []*Tensor, _ *Tensor, st any, g *Tensor, gin []*Tensor) error {
	p := st.(*mmPlan)
	a, b := in[0].Data, in[1].Data
	if p.fold {
		rows := len(p.offA) * p.m
		if gin[0] != nil {
			matmul(false, true, rows, p.k, p.n, g.Data, b, gin[0].Data, 1)
		}
		if gin[1] != nil {
			matmul(true, false, p.k, p.n, rows, a, g.Data, gin[1].Data, 1)
		}
		return nil
	}
	if gin[0] != nil {
		bmm(false, true, p.m, p.k, p.n, g.Data, p.offC, b, p.offB, gin[0].Data, p.offA, 1, p.uniqA)
	}
	if gin[1] != nil {
		bmm(true, false, p.k, p.n, p.m, a, p.offA, g.Data, p.offC, gin[1].Data, p.offB, 1, p.uniqB)
	}
	return nil
}

// gemmMatmul sets c = alpha op(a) op(b) + beta c through the package's
// GEMM (matmul has no alpha).
func gemmMatmul(transA, transB bool, m, n, k int, alpha float64, a, b []float64, beta float64, c []float64) {
	if alpha == 1 || m == 0 || n == 0 || k == 0 {
		// No product to scale (an empty sum leaves beta c).
		matmul(transA, transB, m, n, k, a, b, c, beta)
		return
	}
	ta, ar, ac, tb, br, bc := blasShapes(transA, transB, m, n, k)
	blas64.Gemm(ta, tb, alpha,
		blas64.General{Rows: ar, Cols: ac, Stride: ac, Data: a[:ar*ac]},
		blas64.General{Rows: br, Cols: bc, Stride: bc, Data: b[:br*bc]},
		beta,
		blas64.General{Rows: m, Cols: n, Stride: n, Data: c[:m*n]})
}

func checkGemm(op *onnxio.Op) error {
	if op.Opset != 0 && op.Opset < 7 && op.AttrInt("broadcast", 0) == 0 && len(op.Slots) > 2 && op.Slots[2] >= 0 {
		return fmt.Errorf("legacy Gemm without broadcast")
	}
	return nil
}

type gemmDims struct {
	ta, tb  bool
	m, n, k int
	alpha   float64
	beta    float64
}

func gemmShape(op *onnxio.Op, in []*Tensor) (*gemmDims, error) {
	a, b, err := matMulOperands(in)
	if err != nil {
		return nil, err
	}
	if a.Rank() != 2 || b.Rank() != 2 {
		return nil, fmt.Errorf("Gemm of shapes %s and %s: both must be matrices", plain.Shape(a.Shape), plain.Shape(b.Shape))
	}
	d := &gemmDims{ta: op.AttrInt("transA", 0) != 0, tb: op.AttrInt("transB", 0) != 0,
		alpha: op.AttrFloat("alpha", 1), beta: op.AttrFloat("beta", 1)}
	d.m, d.k = a.Shape[0], a.Shape[1]
	if d.ta {
		d.m, d.k = d.k, d.m
	}
	k2, n := b.Shape[0], b.Shape[1]
	if d.tb {
		k2, n = n, k2
	}
	if k2 != d.k {
		return nil, fmt.Errorf("Gemm of shapes %s and %s (transA %v, transB %v): inner dimensions differ", plain.Shape(a.Shape), plain.Shape(b.Shape), d.ta, d.tb)
	}
	d.n = n
	if len(in) > 2 && in[2] != nil {
		s, err := BroadcastShape(in[2].Shape, []int{d.m, d.n})
		if err != nil || s[0] != d.m || s[1] != d.n || len(s) != 2 {
			return nil, fmt.Errorf("C of shape %s does not broadcast to %d x %d", plain.Shape(in[2].Shape), d.m, d.n)
		}
	}
	return d, nil
}

// addScaledBcast sets out += beta · c broadcast to out's shape.
func addScaledBcast(out *Tensor, c *Tensor, beta float64) {
	idx := bcastIndex(out.Shape, c.Shape)
	for i := range out.Data {
		out.Data[i] += beta * c.Data[at(idx, i)]
	}
}

func gemmForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	d, err := gemmShape(op, in)
	if err != nil {
		return nil, err
	}
	out := NewTensor([]int{d.m, d.n}, nil)
	if len(in) > 2 && in[2] != nil && d.beta != 0 {
		addScaledBcast(out, in[2], d.beta)
	}
	gemmMatmul(d.ta, d.tb, d.m, d.n, d.k, d.alpha, in[0].Data, in[1].Data, 1, out.Data)
	return out, nil
}

// gemmJVP: alpha (dA' B' + A' dB') + beta dC.
func gemmJVP(op *onnxio.Op, in []*Tensor, out *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
	d, err := gemmShape(op, in)
	if err != nil {
		return nil, err
	}
	t := NewTensor(out.Shape, nil)
	if len(tin) > 2 && tin[2] != nil {
		addScaledBcast(t, tin[2], d.beta)
	}
	if tin[0] != nil {
		gemmMatmul(d.ta, d.tb, d.m, d.n, d.k, d.alpha, tin[0].Data, in[1].Data, 1, t.Data)
	}
	if tin[1] != nil {
		gemmMatmul(d.ta, d.tb, d.m, d.n, d.k, d.alpha, in[0].Data, tin[1].Data, 1, t.Data)
	}
	return t, nil
}

// gemmVJP: with G = alpha g, op(A) gets G op(B)ᵀ and op(B) gets op(A)ᵀ G,
// stored transposed where the operand is; C gets beta g summed over its
// broadcast axes.
func gemmVJP(op *onnxio.Op, in []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
	d, err := gemmShape(op, in)
	if err != nil {
		return err
	}
	a, b := in[0].Data, in[1].Data
	if gin[0] != nil {
		if !d.ta {
			gemmMatmul(false, !d.tb, d.m, d.k, d.n, d.alpha, g.Data, b, 1, gin[0].Data)
		} else {
			gemmMatmul(d.tb, true, d.k, d.m, d.n, d.alpha, b, g.Data, 1, gin[0].Data)
		}
	}
	if gin[1] != nil {
		if !d.tb {
			gemmMatmul(!d.ta, false, d.k, d.n, d.m, d.alpha, a, g.Data, 1, gin[1].Data)
		} else {
			gemmMatmul(true, d.ta, d.n, d.k, d.m, d.alpha, g.Data, a, 1, gin[1].Data)
		}
	}
	if len(gin) > 2 && gin[2] != nil {
		idx := bcastIndex(g.Shape, in[2].Shape)
		for i, v := range g.Data {
			gin[2].Data[at(idx, i)] += d.beta * v
		}
	}
	return nil
}
