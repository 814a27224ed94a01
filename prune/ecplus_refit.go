package prune

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"
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
	limit int // bytes y0 may take
	// why says what the refit matches and why, for the report.
	why string
}

// TaskAuto is the task of a model whose task neither labels nor a flag
// name: ec+ recognises a classifier from the graph and its calibration
// outputs (see looksLikeLogits) and treats anything else as a regression.
const TaskAuto analysis.Task = ""

func newRefitView(net *onnxio.Network, task analysis.Task, limit int) *refitView {
	rv := &refitView{task: task, head: -1, limit: limit}
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
	switch {
	case rv.head >= 0:
		rv.why = fmt.Sprintf("KL to the dense model's softmax (the graph ends in %s)", net.Ops[rv.head].Kind)
	case task == analysis.TaskClassification:
		rv.why = "KL to the dense model's softmax (classification task)"
	case task == analysis.TaskRegression:
		rv.why = "squared error to the dense model's outputs (regression task)"
	}
	return rv
}

// Label-free classifiers. With no labels and no --task, a model is
// treated as a classifier, its refit matching the dense model's softmax
// by KL, when its graph ends in Softmax or LogSoftmax over the last axis,
// or when all of these hold:
//   - it has one output, of rank 2 or more, with K >= 2 values on the
//     last axis, computed directly by a dense layer (logits, not an
//     activation's output);
//   - on the first calibration batch the argmax over that axis takes at
//     least 2 different values, and the softmax is confident: its largest
//     probability is on average at least logitConfidence.
//
// A trained classifier's logits on data like its training data pass all
// three (LeNet-300-100 on MNIST: mean top probability 0.93). A regression
// model with a width-1 output (the PDE model) never does; a multi-output
// regression whose outputs happen to look like confident logits is
// pruned with --task regression.
const logitConfidence = 0.7

// looksLikeLogits applies the calibration test to y ([n, ..., K]).
func looksLikeLogits(y *analysis.Tensor) (bool, string) {
	k := y.Shape[y.Rank()-1]
	rows := y.Len() / max(k, 1)
	if k < 2 || rows == 0 {
		return false, fmt.Sprintf("an output of width %d", k)
	}
	seen := map[int]bool{}
	p := make([]float64, k)
	var conf float64
	for r := 0; r < rows; r++ {
		row := y.Data[r*k : (r+1)*k]
		best := 0
		for c, v := range row {
			if v > row[best] {
				best = c
			}
		}
		seen[best] = true
		logSoftmax(p, row)
		conf += math.Exp(p[best])
	}
	conf /= float64(rows)
	if len(seen) < 2 || !(conf >= logitConfidence) {
		return false, fmt.Sprintf("a final dense output of width %d, %d argmax classes and mean top softmax probability %.2f on the first batch", k, len(seen), conf)
	}
	return true, fmt.Sprintf("a final dense output of width %d whose calibration outputs look like logits: %d argmax classes, mean top softmax probability %.2f", k, len(seen), conf)
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
	if rv.task == TaskAuto && rv.head < 0 {
		var ok bool
		var what string
		switch y := tr.Values[rv.out[0]]; {
		case len(rv.out) != 1:
			what = fmt.Sprintf("%d outputs", len(rv.out))
		case y.Rank() < 2:
			what = "an output without a class axis"
		case !lastIsLayer(net, rv.out[0]):
			what = "an output not computed by a dense layer"
		default:
			ok, what = looksLikeLogits(y)
		}
		if ok {
			rv.kl = true
			rv.why = "KL to the dense model's softmax (classifier recognised without labels: " + what + ")"
		} else {
			rv.why = "squared error to the dense model's outputs (no labels or --task; not a classifier: " + what + ")"
		}
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
	if !rv.kl && len(rv.log) > 0 && (rv.why == "" || rv.why[0] == 'K') {
		rv.why = "squared error to the dense model's outputs (" + rv.log[len(rv.log)-1] + ")"
	}
	rv.per = make([]int, len(rv.out))
	k := 0
	for o, id := range rv.out {
		rv.per[o] = tr.Values[id].Len() / n
		k += rv.per[o]
	}
	if total*k*8 <= rv.limit {
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
	lse := analysis.LogSumExp(x)
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

	curv     []keptTrace // traces of the curvature samples
	curvN    int
	curvFull bool // memory ran out while keeping them

	jac []float64 // linearizeFull's gathered Jacobian, reused
}

type keptTrace struct {
	tr       *analysis.Trace
	start, n int
	wx       []float64 // bases: the first layer's output less its bias
	size     int       // layerPass: elements of the trace's values
}

// Damping of the refit: the first try, the bounds and the number of
// tries (objective evaluations) per step.
const (
	lmMu0      = 1.0 // both bundled models' best first damping is >= 1
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
// then a diagonal solve, if that fails), or above ecpCholeskyMax biases
// solved by Lanczos on the scaled matrix (krylovLM), unless N*K*B > ecpJacLimit or
// B > ecpMaxDense: then it is matrix-free (freeLM: one Lanczos basis per
// step from products G v of the differentiator, a JVP then a VJP, on the
// curvature samples), with D the identity scaled to G. Biases are only
// ever set to a point that lowered the objective.
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
	if r.nb > ecpCholeskyMax {
		how = "Lanczos on the assembled matrix"
	}
	if free {
		r.batch = ecpBatch // no Jacobian to bound
		how = fmt.Sprintf("matrix-free Lanczos, curvature from %d samples", min(e.n, ecpCurvSamples))
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
			if err == nil && r.nb > ecpCholeskyMax {
				lin = newKrylovLM(lin.(*fullLM))
			}
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
		var d []float64
		try := func(m, bound float64) (float64, []float64, error) {
			tries++
			var err error
			d, err = lin.solve(grad, m)
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
		// then while it keeps dropping, unless the Gauss-Newton model
		// predicted the drop well (ratio of actual to predicted reduction
		// >= 0.75: then a shorter step cannot do much better, and the
		// try would cost a pass over the data). (Each step starts a
		// decade below the last one's best, as in Levenberg-Marquardt.)
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
				first := best == nil
				best, bestF, bestMu, bestTr = cand, fc, m, r.traces
				if pred, ok := lin.predicted(grad, d); first && ok && pred > 0 && (f-fc)/pred >= 0.75 {
					break
				}
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
			if base = stored*8 <= r.e.limit; base {
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
	// predicted is the drop of the objective the Gauss-Newton model
	// predicts for step d, -(grad.d + d.G d / 2), if it is cheap to know.
	predicted(grad, d []float64) (float64, bool)
}

// fullLM is the assembled Gauss-Newton matrix (upper triangle of G) with
// Marquardt's scaling D = diag(G), floored at 1% of its mean: biases the
// outputs barely see would otherwise be almost undamped and take huge,
// harmful steps along G's near-null directions.
type fullLM struct {
	g []float64
	n int
}

func (f *fullLM) predicted(grad, d []float64) (float64, bool) {
	// G is stored whole (gram computes every entry).
	var dgd float64
	for i := 0; i < f.n; i++ {
		dgd += d[i] * floats.Dot(f.g[i*f.n:(i+1)*f.n], d)
	}
	return -(floats.Dot(grad, d) + dgd/2), true
}

// predicted would cost a product G d, a pass over the curvature samples.
func (f *freeLM) predicted(grad, d []float64) (float64, bool) { return 0, false }

// scaling is Marquardt's D: diag(G), floored at 1% of its mean.
func (f *fullLM) scaling() []float64 {
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

// Above ecpCholeskyMax biases the assembled system is solved by Lanczos
// (krylovLM), not Cholesky: a factorisation per damping tried costs B^3/3
// (2.9 GFLOP for the 2058 biases of a 784-1024-1024-10 MLP, several per
// step), a Lanczos basis B^2 per vector, once per step. ecpKrylovFull
// bounds that basis; it stops earlier at a residual of 1e-6.
var (
	ecpCholeskyMax = 1024
	ecpKrylovFull  = 200
)

// krylovLM solves fullLM's system (G + mu D) x = -grad with the same D,
// as (D^-1/2 G D^-1/2 + mu I) y = -D^-1/2 grad, x = D^-1/2 y: the shifts
// are then multiples of the identity, so one Lanczos basis serves every
// damping (freeLM's machinery on the explicit matrix).
type krylovLM struct {
	f  *fullLM
	dh []float64 // D^1/2
	k  *freeLM
}

func newKrylovLM(f *fullLM) *krylovLM {
	d := f.scaling()
	dh := make([]float64, len(d))
	for i, v := range d {
		dh[i] = math.Sqrt(v)
	}
	k := &krylovLM{f: f, dh: dh}
	n := f.n
	k.k = &freeLM{scale: 1, dim: ecpKrylovFull, mul: func(v []float64) ([]float64, error) {
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

func (k *krylovLM) solve(grad []float64, mu float64) ([]float64, error) {
	gt := make([]float64, len(grad))
	for i, g := range grad {
		gt[i] = g / k.dh[i]
	}
	y, err := k.k.solve(gt, mu)
	if err != nil {
		return nil, err
	}
	for i := range y {
		y[i] /= k.dh[i]
	}
	return y, nil
}

func (k *krylovLM) predicted(grad, d []float64) (float64, bool) { return k.f.predicted(grad, d) }

func (f *fullLM) solve(grad []float64, mu float64) ([]float64, error) {
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

func finite(v []float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

// jacobian adds the Jacobian [n*K, B] of a traced batch of n samples
// into j (rows from row0 on, zero on entry), row s*K+p being
// d y(s)_p / d theta: one reverse pass per output component, batched.
// A row of it is a row of the cotangents at a layer's output, so it is
// filled by contiguous copies; the Gram product takes it transposed.
func (r *refitter) jacobian(tr *analysis.Trace, ys []*analysis.Tensor, n int, j []float64, row0 int) error {
	k, nb := r.rv.k(), r.nb
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
			for q := 0; q < p1-p0; q++ {
				for s := 0; s < n; s++ {
					dst := j[(row0+s*k+p0+q)*nb+r.off[li] : (row0+s*k+p0+q)*nb+r.off[li]+l.Out]
					for pos := 0; pos < rp; pos++ {
						for i, x := range c[(q*rows+s*rp+pos)*l.Out : (q*rows+s*rp+pos+1)*l.Out] {
							dst[i] += x
						}
					}
				}
			}
		}
	}
	return nil
}

// linearizeFull computes the gradient and objective over all samples,
// and assembles the (generalised) Gauss-Newton matrix
// G = (1/S) sum_n J_n^T H_n J_n over the S curvature samples (see
// startCurvature); H is 2I for squared error and diag(p) - p p^T per softmax
// row for the KL.
func (r *refitter) linearizeFull() (lmSolver, []float64, float64, error) {
	grad, f, err := r.gradient()
	if err != nil {
		return nil, nil, 0, err
	}
	nb, k := r.nb, r.rv.k()
	g := make([]float64, nb*nb)
	samples := r.e.n
	if r.curv != nil {
		samples = r.curvN
	}
	alpha := 1 / float64(samples) // H = diag(p) - p p^T, or 2I for squared error
	if !r.rv.kl {
		alpha *= 2
	}
	// When small enough, the Jacobians of all batches are gathered and
	// their Gram product done once: fewer, larger products.
	var all []float64
	row := 0
	if samples*k*nb <= ecpGather {
		// Kept from one linearisation to the next (the same size).
		all = grow(&r.jac, samples*k*nb)
		clear(all)
	}
	visit := func(tr *analysis.Trace, _ [][]float64, n int) error {
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		nk := n * k
		j, row0 := all, row
		if all == nil {
			j, row0 = make([]float64, nk*nb), 0
		} else if row+nk > samples*k {
			return fmt.Errorf("samples beyond the %d of the first pass", samples)
		}
		if err := r.jacobian(tr, ys, n, j, row0); err != nil {
			return err
		}
		jb := j[row0*nb : (row0+nk)*nb]
		if r.rv.kl {
			// KL: J^T (diag(p) - p p^T) J = sum_k m_k m_k^T with
			// m_k = sqrt(p_k) (J_k - p^T J), one softmax row at a time:
			// one product, not the difference of two large ones.
			c := r.rv.width
			y := ys[0].Data
			p := make([]float64, len(y))
			for rr := 0; rr*c < len(y); rr++ {
				logSoftmax(p[rr*c:(rr+1)*c], y[rr*c:(rr+1)*c])
			}
			for q, v := range p {
				p[q] = math.Exp(v)
			}
			mean := make([]float64, nb)
			for rr := 0; rr*c < nk; rr++ {
				clear(mean)
				for q := rr * c; q < (rr+1)*c; q++ {
					floats.AddScaled(mean, p[q], jb[q*nb:(q+1)*nb])
				}
				for q := rr * c; q < (rr+1)*c; q++ {
					jq, sp := jb[q*nb:(q+1)*nb], math.Sqrt(p[q])
					for b, m := range mean {
						jq[b] = sp * (jq[b] - m)
					}
				}
			}
		}
		if all == nil {
			gram(alpha, jb, nk, nb, g)
		}
		row += nk
		return nil
	}
	if r.curv != nil {
		for _, kt := range r.curv {
			if err := visit(kt.tr, nil, kt.n); err != nil {
				return nil, nil, 0, err
			}
		}
	} else if err := r.each(false, visit); err != nil {
		return nil, nil, 0, err
	}
	if all != nil {
		if row != samples*k {
			return nil, nil, 0, fmt.Errorf("the Jacobian has %d rows, want %d", row, samples*k)
		}
		gram(alpha, all, row, nb, g)
	}
	return &fullLM{g: g, n: nb}, grad, f, nil
}

// gradient is the objective's gradient with respect to the biases and
// the objective, over all samples: one reverse pass per batch. The same
// pass keeps the traces of the curvature samples (see startCurvature).
func (r *refitter) gradient() ([]float64, float64, error) {
	grad := make([]float64, r.nb)
	var total float64
	keep := r.startCurvature()
	err := r.each(false, func(tr *analysis.Trace, y0 [][]float64, n int) error {
		keep(tr, n)
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		l, dy := r.rv.loss(ys, y0, true)
		total += l
		return r.pullToBiases(tr, dy, grad)
	})
	if err != nil {
		return nil, 0, err
	}
	r.endCurvature()
	for i := range grad {
		grad[i] /= float64(r.e.n)
	}
	return grad, total / float64(r.e.n), nil
}

// freeLM solves the damped system matrix-free: a Lanczos basis of the
// Krylov space of G and grad, built once per linearisation, serves every
// damping the step tries (the space does not depend on the shift, and the
// Galerkin solution on it is what conjugate gradients would reach for
// that shift in as many iterations). D is the identity scaled to G.
type freeLM struct {
	r     *refitter
	scale float64
	// mul is the operator (nil: r.gv, G from the differentiator) and dim
	// the largest basis (0: ecpKrylov).
	mul   func(v []float64) ([]float64, error)
	dim   int
	q     [][]float64 // orthonormal basis q_1..q_m
	alpha []float64   // T's diagonal
	beta  []float64   // T's off-diagonal (beta[j] couples q_j and q_j+1)
	norm  float64     // ||grad||
	built bool
}

// Refit bounds: the Krylov dimension of the matrix-free solve, and the
// samples whose curvature (G, or the products G v) is used. The gradient
// and every objective use all samples; G, which only shapes the step,
// comes from the first ecpCurvSamples of them, as in Hessian-free
// optimisation (Martens 2010), so that it costs a fixed amount whatever
// the calibration size.
var (
	ecpKrylov      = 10
	ecpCurvSamples = 256
)

// linearizeFree computes the gradient with one reverse pass per batch,
// then keeps the traces of the curvature samples for the products G v.
func (r *refitter) linearizeFree() (lmSolver, []float64, float64, error) {
	grad, fobj, err := r.gradient()
	if err != nil {
		return nil, nil, 0, err
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
	return f, grad, fobj, nil
}

// startCurvature prepares to keep the traces of the pruned network at the
// current biases on the curvature samples (the first ecpCurvSamples, or
// as many of them as fit in memory), batch by batch through the returned
// function; endCurvature logs how it went. With none kept (even one batch
// does not fit) the curvature runs over all the data.
func (r *refitter) startCurvature() func(tr *analysis.Trace, n int) {
	r.curv, r.curvN, r.curvFull = nil, 0, false
	want := min(r.e.n, ecpCurvSamples)
	stored := 0
	return func(tr *analysis.Trace, n int) {
		if r.curvN >= want || r.curvFull {
			return
		}
		for _, v := range tr.Values {
			if v != nil {
				stored += v.Len()
			}
		}
		if stored*8 > r.e.limit {
			r.curvFull = true
			return
		}
		r.curv = append(r.curv, keptTrace{tr: tr, n: n})
		r.curvN += n
	}
}

func (r *refitter) endCurvature() {
	switch want := min(r.e.n, ecpCurvSamples); {
	case r.curv == nil:
		r.e.logf("ec+: refit curvature over all samples, one batch at a time (one batch's traces would not fit)")
	case r.curvN < want:
		r.e.logf("ec+: refit curvature from %d samples (the traces of %d would not fit)", r.curvN, want)
	}
}

// gv is G v = (1/S) sum_n J_n^T H_n J_n v over the curvature samples: J v
// by one forward pass seeded at every layer's output (the biases of
// layer l enter there), H applied per sample, then J^T by one reverse
// pass.
func (r *refitter) gv(v []float64) ([]float64, error) {
	out := make([]float64, r.nb)
	f := func(tr *analysis.Trace, _ [][]float64, n int) error {
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		seeds := make([]*analysis.Tensor, len(r.layers))
		for li, l := range r.layers {
			z := tr.Values[r.z[li]]
			seed := analysis.Zeros(append([]int{1}, z.Shape...)...)
			vl := v[r.off[li] : r.off[li]+l.Out]
			for q := 0; q < len(seed.Data); q += l.Out {
				copy(seed.Data[q:q+l.Out], vl)
			}
			seeds[li] = seed
		}
		jv, err := r.jvp(tr, seeds)
		if err != nil {
			return err
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
		return r.pullToBiases(tr, jv, out)
	}
	samples := r.e.n
	var err error
	if r.curv != nil {
		samples = r.curvN
		for _, kt := range r.curv {
			if err = f(kt.tr, nil, kt.n); err != nil {
				break
			}
		}
	} else {
		err = r.each(false, f)
	}
	for i := range out {
		out[i] /= float64(samples)
	}
	return out, err
}

// pullToBiases adds the VJP of the output cotangents cot (one direction)
// with respect to every refitted bias to dst: the cotangent at each
// layer's output, summed over its rows (a bias is shared by all rows).
func (r *refitter) pullToBiases(tr *analysis.Trace, cot []*analysis.Tensor, dst []float64) error {
	res, err := r.vjp(tr, cot)
	if err != nil {
		return err
	}
	for li, l := range r.layers {
		sumRows(dst[r.off[li]:r.off[li]+l.Out], res[r.z[li]].Data, l.Out)
	}
	return nil
}

// vjp and jvp are the matrix-free refit's products: in float32 with
// probes (whoever chose probes traded exactness for speed already), else
// float64. Rounding in the step's direction cannot make the refit worse:
// a step is kept only if the objective, always in float64, drops.
func (r *refitter) vjp(tr *analysis.Trace, cot []*analysis.Tensor) (map[int]*analysis.Tensor, error) {
	if r.e.gopt.Probes > 0 {
		return analysis.VJP32(r.view, tr, cot, r.z)
	}
	return analysis.VJP(r.view, tr, cot, r.z)
}

func (r *refitter) jvp(tr *analysis.Trace, seeds []*analysis.Tensor) ([]*analysis.Tensor, error) {
	if r.e.gopt.Probes > 0 {
		return analysis.JVPSum32(r.view, tr, r.z, seeds)
	}
	return analysis.JVPSum(r.view, tr, r.z, seeds)
}

func dot(a, b []float64) float64 {
	var s float64
	for i, x := range a {
		s += x * b[i]
	}
	return s
}

// build runs Lanczos from grad, with full reorthogonalisation (the basis
// is small: at most ecpKrylov vectors of the biases' size), until
// ecpKrylov vectors, an invariant subspace, or a residual below 1e-6 of
// ||grad|| for the smallest damping mu (larger ones converge faster).
func (f *freeLM) build(grad []float64, mu float64) error {
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
	mul, dim := f.mul, f.dim
	if mul == nil {
		mul = f.r.gv
	}
	if dim == 0 {
		dim = ecpKrylov
	}
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
		if y := f.tri(mu * f.scale); b*math.Abs(y[len(y)-1]) <= 1e-6*f.norm {
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
func (f *freeLM) tri(s float64) []float64 {
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

func (f *freeLM) solve(grad []float64, mu float64) ([]float64, error) {
	if !f.built {
		if err := f.build(grad, mu); err != nil {
			return nil, err
		}
	}
	x := make([]float64, len(grad))
	if f.norm == 0 {
		return x, nil
	}
	y := f.tri(mu * f.scale)
	for j, qj := range f.q[:len(y)] {
		for i, v := range qj {
			x[i] += y[j] * v
		}
	}
	return x, nil
}

// gram adds alpha a^T a to c [n, n], a being [rows, n]: one product,
// whose kernel packs the transposed operand, so the layout costs nothing.
// The full matrix is computed; the solver reads its upper triangle.
func gram(alpha float64, a []float64, rows, n int, c []float64) {
	if n == 0 || rows == 0 {
		return
	}
	blas64.Gemm(blas.Trans, blas.NoTrans, alpha,
		blas64.General{Rows: rows, Cols: n, Stride: n, Data: a[:rows*n]},
		blas64.General{Rows: rows, Cols: n, Stride: n, Data: a[:rows*n]},
		1, blas64.General{Rows: n, Cols: n, Stride: n, Data: c[:n*n]})
}

// lastIsLayer tells whether value id is the output of a dense layer's op.
func lastIsLayer(net *onnxio.Network, id int) bool {
	for i := len(net.Ops) - 1; i >= 0; i-- {
		if net.Ops[i].Out == id {
			return net.Ops[i].Layer != nil
		}
	}
	return false
}
