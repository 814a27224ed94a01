package prune

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// refitView is what the bias refit matches: the original network's outputs
// under squared error, or, for classifiers, its logits under
// KL(softmax(y0) || softmax(y')). A final Softmax or LogSoftmax is cut
// off so that the KL's generalised Gauss-Newton matrix is taken on the
// logits, where it is the Fisher matrix diag(p) - p p^T (on
// log-probabilities the KL is linear and its Hessian zero).
type refitView struct {
	task analysis.Task
	head int // index of the cut Softmax/LogSoftmax op, or -1
	kl   bool

	out   []int // value ids of the view's outputs
	per   []int // values per sample of each
	width int   // KL: length of the softmax axis (the last)
	y0    [][]float64
	log   []string
}

func newRefitView(net *onnxio.Network, task analysis.Task) *refitView {
	rv := &refitView{task: task, head: -1}
	if len(net.Outputs) == 1 {
		for i := len(net.Ops) - 1; i >= 0; i-- {
			op := &net.Ops[i]
			if op.Out != net.Outputs[0] {
				continue
			}
			if (op.Kind == onnxio.OpSoftmax || op.Kind == onnxio.OpLogSoftmax) && len(op.In) == 1 {
				rv.head = i
			}
			break
		}
	}
	rv.kl = task == analysis.TaskClassification || rv.head >= 0
	return rv
}

// settle fixes the view from a trace of the original network on the
// first batch (n samples, total samples in all).
func (rv *refitView) settle(net *onnxio.Network, tr *analysis.Trace, n, total int) {
	if rv.head >= 0 {
		op := &net.Ops[rv.head]
		x := tr.Values[op.In[0]]
		ax := op.Axis
		if ax < 0 {
			ax += x.Rank()
		}
		if ax != x.Rank()-1 {
			rv.log = append(rv.log, fmt.Sprintf("the final %s is not over the last axis: the refit matches the outputs by squared error", op.Kind))
			rv.head, rv.kl = -1, false
		}
	}
	rv.out = net.Outputs
	if rv.head >= 0 {
		rv.out = []int{net.Ops[rv.head].In[0]}
	}
	if rv.kl {
		y := tr.Values[rv.out[0]]
		switch {
		case len(rv.out) != 1:
			rv.log = append(rv.log, fmt.Sprintf("a classifier with %d outputs: the refit matches them by squared error", len(rv.out)))
			rv.kl = false
		case y.Rank() < 2:
			rv.log = append(rv.log, "a classifier whose output has no class axis: the refit matches it by squared error")
			rv.kl = false
		default:
			rv.width = y.Shape[y.Rank()-1]
		}
	}
	rv.per = make([]int, len(rv.out))
	k := 0
	for o, id := range rv.out {
		rv.per[o] = tr.Values[id].Len() / n
		k += rv.per[o]
	}
	if total*k <= ecpMemLimit {
		rv.y0 = make([][]float64, len(rv.out))
	}
}

// keepTargets stores the original network's view outputs of a batch.
func (rv *refitView) keepTargets(tr *analysis.Trace, n int) error {
	if rv.y0 == nil {
		return nil
	}
	for o, id := range rv.out {
		y := tr.Values[id].Data
		if len(y) != n*rv.per[o] {
			return fmt.Errorf("output %d has %d values for %d samples, want %d each", o, len(y), n, rv.per[o])
		}
		rv.y0[o] = append(rv.y0[o], y...)
	}
	return nil
}

// of is net seen through the view: the same ops up to the cut head.
func (rv *refitView) of(net *onnxio.Network) *onnxio.Network {
	if rv.head < 0 {
		return net
	}
	c := *net
	c.Ops = net.Ops[:rv.head:rv.head]
	c.Outputs = rv.out
	return &c
}

// k is the number of matched values per sample.
func (rv *refitView) k() int {
	k := 0
	for _, p := range rv.per {
		k += p
	}
	return k
}

// loss adds sum over a batch's rows of the per-sample objective, and
// returns dloss/dy (one [1, shape] cotangent per output) when cot is set.
func (rv *refitView) loss(ys []*analysis.Tensor, y0 [][]float64, cot bool) (float64, []*analysis.Tensor) {
	var total float64
	var dy []*analysis.Tensor
	if cot {
		dy = make([]*analysis.Tensor, len(ys))
		for o, y := range ys {
			dy[o] = analysis.Zeros(append([]int{1}, y.Shape...)...)
		}
	}
	if rv.kl {
		c := rv.width
		y, t := ys[0].Data, y0[0]
		p, p0 := make([]float64, c), make([]float64, c)
		for r := 0; r*c < len(y); r++ {
			lse := logSoftmax(p, y[r*c:(r+1)*c])
			lse0 := logSoftmax(p0, t[r*c:(r+1)*c])
			for q := 0; q < c; q++ {
				// KL = sum p0 (log p0 - log p), log-probabilities being
				// the logits minus their log-sum-exp.
				pq0 := math.Exp(p0[q])
				if pq0 > 0 {
					total += pq0 * ((t[r*c+q] - lse0) - (y[r*c+q] - lse))
				}
				if cot {
					dy[0].Data[r*c+q] = math.Exp(p[q]) - pq0
				}
			}
		}
		return total, dy
	}
	for o, y := range ys {
		for q, v := range y.Data {
			d := v - y0[o][q]
			total += d * d
			if cot {
				dy[o].Data[q] = 2 * d
			}
		}
	}
	return total, dy
}

// logSoftmax writes log softmax(x) to dst and returns log sum exp(x).
func logSoftmax(dst, x []float64) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, v)
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v - m)
	}
	lse := m + math.Log(s)
	for q, v := range x {
		dst[q] = v - lse
	}
	return lse
}

// refitter runs the Levenberg-Marquardt refit of all biases of the
// prunable layers of cur.
type refitter struct {
	e      *ecp
	rv     *refitView
	view   *onnxio.Network // cur through the view
	orig   *onnxio.Network // the original through the view
	layers []*onnxio.Layer // cur's prunable layers (biases are the parameters)
	z      []int           // their output value ids
	off    []int           // their first parameter
	nb     int             // number of parameters
	batch  int
	first  int // index in layers of the one evaluated first

	// When they fit in memory: bases are traces of every batch at some
	// biases, with the first layer's output less its bias, so that new
	// biases are evaluated from that layer on (RunFrom) without the
	// product before it, typically the widest; traces are those of the
	// current biases, for the linearisation after an evaluation.
	bases   []keptTrace
	traces  []keptTrace
	version int // bumped whenever the biases change
	tracesV int
}

type keptTrace struct {
	tr       *analysis.Trace
	start, n int
	wx       []float64 // bases: the first layer's output less its bias
}

// Damping of the refit: the first try, the bounds and the number of
// tries (objective evaluations) per step.
const (
	lmMu0      = 1e-1
	lmMuMin    = 1e-12
	lmMuMax    = 1e12
	lmMaxTries = 8
)

// refit runs the Levenberg-Marquardt steps on the biases of cur's
// prunable layers. Each step linearises once (gradient and Gauss-Newton
// matrix G) and solves (G + mu D) d = -grad for a few dampings mu,
// keeping the best that lowers the objective (see the search below); the
// next step starts a decade below it. D is Marquardt's diag(G), floored.
// G is assembled from the Jacobian and factored by Cholesky (more damping,
// then a diagonal solve, if that fails), unless N*K*B > ecpJacLimit or
// B > ecpMaxDense: then conjugate gradients on products G v from the
// differentiator (JVP then VJP), with D the identity scaled to G. Biases
// are only ever set to a point that lowered the objective.
func (e *ecp) refit(cur *onnxio.Network, steps int) error {
	for _, s := range e.rv.log {
		e.logf("ec+: %s", s)
	}
	r, err := newRefitter(e, cur)
	if err != nil {
		return err
	}
	free := float64(e.n)*float64(r.rv.k())*float64(r.nb) > ecpJacLimit || r.nb > ecpMaxDense
	how := "Cholesky"
	if free {
		how = "matrix-free CG"
	}
	what := "squared error"
	if r.rv.kl {
		what = "KL on softmax"
	}
	theta := r.get()
	var f float64
	mu := lmMu0
	for step := 0; step < steps; step++ {
		// The linearisation's pass also gives the objective: at the
		// start, and after a step whose best try was not the last one.
		var lin lmSolver
		var grad []float64
		var fl float64
		if free {
			lin, grad, fl, err = r.linearizeFree()
		} else {
			lin, grad, fl, err = r.linearizeFull()
		}
		if err != nil {
			return err
		}
		if step == 0 {
			f = fl
			e.prev = nil // the bases (or the data) serve from here on
			e.logf("ec+: refit of %d biases (%s, %s): objective %.6g", r.nb, what, how, f)
		}
		if f <= 0 || allZero(grad) {
			break
		}
		base := theta
		tries := 0
		try := func(m, bound float64) (float64, []float64, error) {
			tries++
			d, err := lin.solve(grad, m)
			if err != nil {
				return 0, nil, err
			}
			cand := make([]float64, len(base))
			for q := range base {
				cand[q] = base[q] + d[q]
			}
			r.set(cand)
			fc, err := r.objectiveBelow(true, bound)
			if math.IsNaN(fc) {
				fc = math.Inf(1)
			}
			return fc, cand, err
		}
		// The objective of the step as a function of the damping has,
		// on the models we tried, one minimum, often above the first
		// value that lowers the objective; with only a few steps it pays
		// to look for it. Raise the damping until the objective drops,
		// then while it keeps dropping. (Each step starts a decade below
		// the last one's best, as in Levenberg-Marquardt.)
		var best []float64
		var bestTr []keptTrace
		bestF, bestMu, lastMu := f, mu, mu
		for m := mu; tries < lmMaxTries && m <= lmMuMax; m *= 10 {
			bound := f
			if best != nil {
				bound = bestF
			}
			fc, cand, err := try(m, bound)
			if err != nil {
				return err
			}
			lastMu = m
			if fc < bound {
				best, bestF, bestMu, bestTr = cand, fc, m, r.traces
			} else if best != nil {
				break
			}
		}
		if best == nil {
			r.set(theta) // no damping helped: keep the biases
			e.logf("ec+: refit step %d: no damping lowers the objective, stopping", step+1)
			break
		}
		if lastMu != bestMu {
			// Back to the best try, whose traces serve the next
			// linearisation.
			r.set(best)
			if bestTr != nil {
				r.traces, r.tracesV = bestTr, r.version
			}
		}
		theta, f = best, bestF
		mu = math.Max(bestMu/10, lmMuMin)
		e.logf("ec+: refit step %d: objective %.6g (damping %.3g, %d tries)", step+1, f, bestMu, tries)
	}
	r.bases, r.traces = nil, nil
	return nil
}

// newRefitter sets up the refit of the biases of cur's prunable layers
// (pruneLayer gave every one a bias).
func newRefitter(e *ecp, cur *onnxio.Network) (*refitter, error) {
	r := &refitter{e: e, rv: e.rv, view: e.rv.of(cur), orig: e.rv.of(e.net), tracesV: -1}
	for li, ls := range e.st.Layers {
		l := cur.Ops[ls.Op].Layer
		if len(l.B) != l.Out {
			return nil, fmt.Errorf("layer %q has no bias to refit", l.Name)
		}
		if ls.Op < e.st.Layers[r.first].Op {
			r.first = li
		}
		r.layers = append(r.layers, l)
		r.z = append(r.z, cur.Ops[ls.Op].Out)
		r.off = append(r.off, r.nb)
		r.nb += l.Out
	}
	// Bound the batch's Jacobian, n*K*B values.
	r.batch = max(1, min(ecpBatch, (1<<22)/max(1, r.rv.k()*r.nb)))
	return r, nil
}

func allZero(v []float64) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}

// get and set read and write the parameters (all refitted biases).
func (r *refitter) get() []float64 {
	th := make([]float64, r.nb)
	for li, l := range r.layers {
		copy(th[r.off[li]:], l.B)
	}
	return th
}

func (r *refitter) set(th []float64) {
	for li, l := range r.layers {
		copy(l.B, th[r.off[li]:r.off[li]+l.Out])
	}
	r.version++
}

// each runs the view of the pruned network per batch and calls f with
// the trace and the original's outputs. It replays the traces of the
// current biases if kept, else evaluates from the bases, else runs the
// data (keeping bases when they fit); keep asks to keep the traces.
func (r *refitter) each(keep bool, f func(tr *analysis.Trace, y0 [][]float64, n int) error) error {
	if r.traces != nil && r.tracesV == r.version {
		for _, kt := range r.traces {
			if err := r.visit(f, kt.tr, nil, kt.start, kt.n); err != nil {
				return err
			}
		}
		return nil
	}
	r.traces = nil
	var kept []keptTrace
	if r.bases != nil {
		for _, b := range r.bases {
			tr, err := r.fromBase(b)
			if err != nil {
				return fmt.Errorf("samples %d..%d: %w", b.start, b.start+b.n-1, err)
			}
			if keep {
				kept = append(kept, keptTrace{tr: tr, start: b.start, n: b.n})
			}
			if err := r.visit(f, tr, nil, b.start, b.n); err != nil {
				return err
			}
		}
		if keep {
			r.traces, r.tracesV = kept, r.version
		}
		return nil
	}
	// Bases are taken on the first pass, only with the targets cached
	// (replaying needs no data).
	base := r.rv.y0 != nil
	stored := 0
	var bases []keptTrace
	err := r.run(func(tr, tr0 *analysis.Trace, start, n int) error {
		if base {
			for _, v := range tr.Values {
				if v != nil {
					stored += v.Len()
				}
			}
			if base = stored <= ecpMemLimit; base {
				l := r.layers[r.first]
				z := tr.Values[r.z[r.first]].Data
				wx := make([]float64, len(z))
				for q, v := range z {
					wx[q] = v - l.B[q%l.Out]
				}
				bases = append(bases, keptTrace{tr: tr, start: start, n: n, wx: wx})
			} else {
				bases = nil
			}
		}
		return r.visit(f, tr, tr0, start, n)
	})
	if err != nil {
		return err
	}
	if base {
		r.bases = bases
		if keep {
			r.traces, r.tracesV = bases, r.version
		}
	}
	return nil
}

// run evaluates the view of the pruned network on every batch: from the
// sequential stage's kept traces when they fit the refit's batches and
// the targets are cached, else from the data (with the original's trace
// tr0 when the targets are not cached).
func (r *refitter) run(visit func(tr, tr0 *analysis.Trace, start, n int) error) error {
	if e := r.e; e.prev != nil && r.batch == ecpBatch && r.rv.y0 != nil {
		for _, p := range e.prev {
			tr, err := analysis.RunFrom(r.view, p.tr, e.prevOp)
			if err != nil {
				return fmt.Errorf("samples %d..%d: %w", p.start, p.start+p.n-1, err)
			}
			if err := visit(tr, nil, p.start, p.n); err != nil {
				return err
			}
		}
		return nil
	}
	return r.e.data.Each(r.batch, func(b analysis.Batch) error {
		n, err := batchLen(b)
		if err != nil {
			return err
		}
		tr, err := analysis.Run(r.view, b.Inputs)
		if err != nil {
			return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
		}
		var tr0 *analysis.Trace
		if r.rv.y0 == nil {
			if tr0, err = analysis.Run(r.orig, b.Inputs); err != nil {
				return fmt.Errorf("samples %d..%d: original network: %w", b.Start, b.Start+n-1, err)
			}
		}
		return visit(tr, tr0, b.Start, n)
	})
}

// fromBase evaluates the current biases on a base trace: the first
// layer's output is its product (kept) plus the bias, and everything after
// it is run again.
func (r *refitter) fromBase(b keptTrace) (*analysis.Trace, error) {
	l := r.layers[r.first]
	id := r.z[r.first]
	old := b.tr.Values[id]
	z := analysis.NewTensor(old.Shape, nil)
	for q, v := range b.wx {
		z.Data[q] = v + l.B[q%l.Out]
	}
	tr := *b.tr
	tr.Values = append([]*analysis.Tensor(nil), b.tr.Values...)
	tr.Values[id] = z
	return analysis.RunFrom(r.view, &tr, r.e.st.Layers[r.first].Op+1)
}

// visit calls f with a batch's trace and its targets.
func (r *refitter) visit(f func(tr *analysis.Trace, y0 [][]float64, n int) error, tr, tr0 *analysis.Trace, start, n int) error {
	y0 := r.targets(tr0, start, n)
	if y0 == nil {
		return fmt.Errorf("samples %d..%d: the calibration data changed between passes", start, start+n-1)
	}
	return f(tr, y0, n)
}

// targets are the original's view outputs for samples [start, start+n):
// from the cache, or from tr0; nil if they do not match.
func (r *refitter) targets(tr0 *analysis.Trace, start, n int) [][]float64 {
	y0 := make([][]float64, len(r.rv.out))
	for o, id := range r.rv.out {
		p := r.rv.per[o]
		switch {
		case tr0 != nil:
			y0[o] = tr0.Values[id].Data
			if len(y0[o]) != n*p {
				return nil
			}
		case r.rv.y0 == nil || start < 0 || (start+n)*p > len(r.rv.y0[o]):
			return nil
		default:
			y0[o] = r.rv.y0[o][start*p : (start+n)*p]
		}
	}
	return y0
}

// outputs are the view's outputs of a trace, checked against the
// original's shapes.
func (r *refitter) outputs(tr *analysis.Trace, n int) ([]*analysis.Tensor, error) {
	ys := make([]*analysis.Tensor, len(r.rv.out))
	for o, id := range r.rv.out {
		ys[o] = tr.Values[id]
		if ys[o].Len() != n*r.rv.per[o] {
			return nil, fmt.Errorf("output %d has %d values for %d samples, want %d each", o, ys[o].Len(), n, r.rv.per[o])
		}
	}
	return ys, nil
}

// objective is F = (1/N) sum_n loss_n at the current biases.
func (r *refitter) objective(keep bool) (float64, error) {
	return r.objectiveBelow(keep, math.Inf(1))
}

// errAbove stops an evaluation that cannot beat its bound.
var errAbove = errors.New("objective above the bound")

// objectiveBelow is objective, but returns +Inf as soon as the running
// sum exceeds bound: every sample's loss is >= 0, so the candidate is
// rejected whatever the remaining batches hold. Most rejected tries of
// the damping search stop after a batch or two.
func (r *refitter) objectiveBelow(keep bool, bound float64) (float64, error) {
	var total float64
	limit := bound * float64(r.e.n)
	err := r.each(keep, func(tr *analysis.Trace, y0 [][]float64, n int) error {
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		l, _ := r.rv.loss(ys, y0, false)
		if total += l; total > limit {
			return errAbove
		}
		return nil
	})
	if errors.Is(err, errAbove) {
		return math.Inf(1), nil
	}
	return total / float64(r.e.n), err
}

// sumRows adds a cotangent [P=1, rows, Out] at a layer's output, summed
// over rows, into g (a bias is shared by all rows).
func sumRows(g []float64, c []float64, out int) {
	for r := 0; r*out < len(c); r++ {
		for i, v := range c[r*out : (r+1)*out] {
			g[i] += v
		}
	}
}

// lmSolver solves (G + mu D) d = -grad for one linearisation.
type lmSolver interface {
	solve(grad []float64, mu float64) ([]float64, error)
}

// fullLM is the assembled Gauss-Newton matrix (upper triangle of G) with
// Marquardt's scaling D = diag(G), floored at 1% of its mean: biases the
// outputs barely see would otherwise be almost undamped and take huge,
// harmful steps along G's near-null directions.
type fullLM struct {
	g []float64
	n int
}

func (f *fullLM) solve(grad []float64, mu float64) ([]float64, error) {
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

func finite(v []float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

// jacobian adds the transposed Jacobian [B, n*K] of a traced batch of n
// samples into jt (row b at jt[b*stride+col0:], zero on entry), column
// s*K+p being d y(s)_p / d theta: one reverse pass per output component,
// batched. Transposed, the Gram products below run on contiguous rows.
func (r *refitter) jacobian(tr *analysis.Trace, ys []*analysis.Tensor, n int, jt []float64, stride, col0 int) error {
	k := r.rv.k()
	nk := n * k
	widest := 1
	for _, v := range tr.Values {
		if v != nil {
			widest = max(widest, v.Len())
		}
	}
	chunk := max(1, (1<<24)/widest)
	for p0 := 0; p0 < k; p0 += chunk {
		p1 := min(k, p0+chunk)
		cot := make([]*analysis.Tensor, len(ys))
		base := 0
		for o, y := range ys {
			per := r.rv.per[o]
			for p := max(p0, base); p < min(p1, base+per); p++ {
				if cot[o] == nil {
					cot[o] = analysis.Zeros(append([]int{p1 - p0}, y.Shape...)...)
				}
				for s := 0; s < n; s++ {
					cot[o].Data[(p-p0)*y.Len()+s*per+p-base] = 1
				}
			}
			base += per
		}
		res, err := analysis.VJP(r.view, tr, cot, r.z)
		if err != nil {
			return err
		}
		for li, l := range r.layers {
			c := res[r.z[li]].Data
			rows := len(c) / (p1 - p0) / l.Out
			rp := rows / n
			// One parameter (row of jt) at a time: contiguous writes.
			for i := 0; i < l.Out; i++ {
				b := r.off[li] + i
				dst := jt[b*stride+col0 : b*stride+col0+nk]
				for q := 0; q < p1-p0; q++ {
					for s := 0; s < n; s++ {
						var v float64
						for pos := 0; pos < rp; pos++ {
							v += c[(q*rows+s*rp+pos)*l.Out+i]
						}
						dst[s*k+p0+q] += v
					}
				}
			}
		}
	}
	return nil
}

// linearizeFull assembles the gradient and the (generalised) Gauss-Newton
// matrix G = (1/N) sum_n J_n^T H_n J_n batch by batch; H is 2I for squared
// error and diag(p) - p p^T per softmax row for the KL.
func (r *refitter) linearizeFull() (lmSolver, []float64, float64, error) {
	nb, k := r.nb, r.rv.k()
	grad := make([]float64, nb)
	var total float64
	g := make([]float64, nb*nb)
	inv := 1 / float64(r.e.n)
	alpha := inv // H = diag(p) - p p^T, or 2I for squared error
	if !r.rv.kl {
		alpha = 2 * inv
	}
	// When small enough, the Jacobians of all batches are gathered and
	// their Gram product done once: fewer, larger products.
	var all []float64
	col := 0
	if r.e.n*k*nb <= ecpGather {
		all = make([]float64, nb*r.e.n*k)
	}
	err := r.each(false, func(tr *analysis.Trace, y0 [][]float64, n int) error {
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		l, dy := r.rv.loss(ys, y0, true)
		total += l
		nk := n * k
		jt, stride, col0 := all, r.e.n*k, col
		if all == nil {
			jt, stride, col0 = make([]float64, nb*nk), nk, 0
		} else if col+nk > stride {
			return fmt.Errorf("samples beyond the %d of the first pass", r.e.n)
		}
		if err := r.jacobian(tr, ys, n, jt, stride, col0); err != nil {
			return err
		}
		// dL/dy in the Jacobian's column order (sample, component).
		w := make([]float64, nk)
		base := 0
		for o := range ys {
			per := r.rv.per[o]
			for s := 0; s < n; s++ {
				copy(w[s*k+base:s*k+base+per], dy[o].Data[s*per:(s+1)*per])
			}
			base += per
		}
		blas64.Gemv(blas.NoTrans, inv, blas64.General{Rows: nb, Cols: nk, Stride: stride, Data: jt[col0:]},
			blas64.Vector{N: nk, Inc: 1, Data: w}, 1, blas64.Vector{N: nb, Inc: 1, Data: grad})
		if r.rv.kl {
			// KL: J^T (diag(p) - p p^T) J = sum_k m_k m_k^T with
			// m_k = sqrt(p_k) (J_k - p^T J), one softmax row at a time:
			// one product, not the difference of two large ones.
			c := r.rv.width
			y := ys[0].Data
			p := make([]float64, len(y))
			sp := make([]float64, len(y))
			for rr := 0; rr*c < len(y); rr++ {
				logSoftmax(p[rr*c:(rr+1)*c], y[rr*c:(rr+1)*c])
			}
			for q, v := range p {
				p[q] = math.Exp(v)
				sp[q] = math.Sqrt(p[q])
			}
			for b := 0; b < nb; b++ {
				row := jt[b*stride+col0 : b*stride+col0+nk]
				for rr := 0; rr*c < nk; rr++ {
					var mean float64
					for q := rr * c; q < (rr+1)*c; q++ {
						mean += p[q] * row[q]
					}
					for q := rr * c; q < (rr+1)*c; q++ {
						row[q] = sp[q] * (row[q] - mean)
					}
				}
			}
		}
		if all == nil {
			gram(alpha, jt, nb, nk, g)
		}
		col += nk
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	if all != nil {
		if col != r.e.n*k {
			return nil, nil, 0, fmt.Errorf("the Jacobian has %d columns, want %d", col, r.e.n*k)
		}
		gram(alpha, all, nb, col, g)
	}
	return &fullLM{g: g, n: nb}, grad, total / float64(r.e.n), nil
}

// freeLM solves (G + mu s I) d = -grad by conjugate gradients with
// products G v from a forward (JVP) and a reverse (VJP) pass over the
// data; s is G's Rayleigh quotient along the gradient, which puts the
// damping on G's scale.
type freeLM struct {
	r     *refitter
	scale float64
}

// linearizeFree computes the gradient with one reverse pass per batch.
func (r *refitter) linearizeFree() (lmSolver, []float64, float64, error) {
	grad := make([]float64, r.nb)
	var total float64
	err := r.each(false, func(tr *analysis.Trace, y0 [][]float64, n int) error {
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		l, dy := r.rv.loss(ys, y0, true)
		total += l
		res, err := analysis.VJP(r.view, tr, dy, r.z)
		if err != nil {
			return err
		}
		for li, l := range r.layers {
			sumRows(grad[r.off[li]:r.off[li]+l.Out], res[r.z[li]].Data, l.Out)
		}
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	for i := range grad {
		grad[i] /= float64(r.e.n)
	}
	f := &freeLM{r: r, scale: 1}
	if gg := dot(grad, grad); gg > 0 {
		hg, err := r.gv(grad)
		if err != nil {
			return nil, nil, 0, err
		}
		if s := dot(grad, hg) / gg; s > 0 {
			f.scale = s
		}
	}
	return f, grad, total / float64(r.e.n), nil
}

// gv is G v = (1/N) sum_n J_n^T H_n J_n v: J v by one forward pass per
// layer (the biases of layer l enter at its output), H applied per
// sample, then J^T by one reverse pass.
func (r *refitter) gv(v []float64) ([]float64, error) {
	out := make([]float64, r.nb)
	err := r.each(false, func(tr *analysis.Trace, _ [][]float64, n int) error {
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		jv := make([]*analysis.Tensor, len(ys))
		for o, y := range ys {
			jv[o] = analysis.Zeros(append([]int{1}, y.Shape...)...)
		}
		for li, l := range r.layers {
			z := tr.Values[r.z[li]]
			seed := analysis.Zeros(append([]int{1}, z.Shape...)...)
			vl := v[r.off[li] : r.off[li]+l.Out]
			for q := 0; q < len(seed.Data); q += l.Out {
				copy(seed.Data[q:q+l.Out], vl)
			}
			tans, err := analysis.JVP(r.view, tr, r.z[li], seed)
			if err != nil {
				return err
			}
			for o, t := range tans {
				for q, x := range t.Data {
					jv[o].Data[q] += x
				}
			}
		}
		if r.rv.kl {
			c := r.rv.width
			lp := make([]float64, c)
			y, t := ys[0].Data, jv[0].Data
			for rr := 0; rr*c < len(y); rr++ {
				logSoftmax(lp, y[rr*c:(rr+1)*c])
				var pt float64
				for q := 0; q < c; q++ {
					pt += math.Exp(lp[q]) * t[rr*c+q]
				}
				for q := 0; q < c; q++ {
					t[rr*c+q] = math.Exp(lp[q]) * (t[rr*c+q] - pt)
				}
			}
		} else {
			for _, t := range jv {
				for q := range t.Data {
					t.Data[q] *= 2
				}
			}
		}
		res, err := analysis.VJP(r.view, tr, jv, r.z)
		if err != nil {
			return err
		}
		for li, l := range r.layers {
			sumRows(out[r.off[li]:r.off[li]+l.Out], res[r.z[li]].Data, l.Out)
		}
		return nil
	})
	for i := range out {
		out[i] /= float64(r.e.n)
	}
	return out, err
}

func dot(a, b []float64) float64 {
	var s float64
	for i, x := range a {
		s += x * b[i]
	}
	return s
}

// solve runs at most 50 CG iterations (each a pass over the data), to a
// relative residual of 1e-6.
func (f *freeLM) solve(grad []float64, mu float64) ([]float64, error) {
	n := len(grad)
	damp := mu * f.scale
	x := make([]float64, n)
	res := make([]float64, n)
	for i, g := range grad {
		res[i] = -g
	}
	p := append([]float64(nil), res...)
	rr := dot(res, res)
	stop := 1e-12 * rr
	for it := 0; it < min(2*n, 50) && rr > stop; it++ {
		ap, err := f.r.gv(p)
		if err != nil {
			return nil, err
		}
		for i := range ap {
			ap[i] += damp * p[i]
		}
		pap := dot(p, ap)
		if pap <= 0 {
			break // G is PSD and damp > 0: only rounding gets here
		}
		alpha := rr / pap
		for i := range x {
			x[i] += alpha * p[i]
			res[i] -= alpha * ap[i]
		}
		rn := dot(res, res)
		for i := range p {
			p[i] = res[i] + rn/rr*p[i]
		}
		rr = rn
	}
	return x, nil
}

// gram adds alpha a a^T to the upper triangle of c [n, n], a being
// [n, cols]. gonum's Dsyrk reads all of a once per row of c, which is slow
// once a outgrows the cache; here each upper block of c (64 x 64) is the
// blocked Gemm of two row panels of a, the blocks spread over the CPUs.
// Each block is written by one worker: the result does not depend on the
// scheduling.
func gram(alpha float64, a []float64, n, cols int, c []float64) {
	if n == 0 || cols == 0 {
		return
	}
	const w = 64
	np := (n + w - 1) / w
	type block struct{ p, q int }
	var blocks []block
	for p := 0; p < np; p++ {
		for q := p; q < np; q++ {
			blocks = append(blocks, block{p * w, q * w})
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(blocks))
	if float64(n)*float64(n)*float64(cols) < 1<<26 {
		workers = 1 // a few milliseconds: not worth more threads
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= len(blocks) {
					return
				}
				p, q := blocks[k].p, blocks[k].q
				pw, qw := min(w, n-p), min(w, n-q)
				blas64.Gemm(blas.NoTrans, blas.Trans, alpha,
					blas64.General{Rows: pw, Cols: cols, Stride: cols, Data: a[p*cols : (p+pw)*cols]},
					blas64.General{Rows: qw, Cols: cols, Stride: cols, Data: a[q*cols : (q+qw)*cols]},
					1, blas64.General{Rows: pw, Cols: qw, Stride: n, Data: c[p*n+q:]})
			}
		}()
	}
	wg.Wait()
}
