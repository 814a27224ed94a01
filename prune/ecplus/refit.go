package ecplus

import (
	"errors"
	"fmt"
	"math"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune/internal/solve"
)

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
	g   []float64 // and its Gauss-Newton matrix
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
// solved by Lanczos on the scaled matrix (solve.Scaled), unless N*K*B > ecpJacLimit or
// B > ecpMaxDense: then it is matrix-free (solve.Lanczos: one Lanczos basis per
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
	e.prog.start(PhaseRefit, steps)
	for step := 0; step < steps; step++ {
		// The linearisation's pass also gives the objective: at the
		// start, and after a step whose best try was not the last one.
		var lin solve.Damped
		var grad []float64
		var fl float64
		if free {
			lin, grad, fl, err = r.linearizeFree()
		} else {
			lin, grad, fl, err = r.linearizeFull()
			if err == nil && r.nb > ecpCholeskyMax {
				lin = solve.NewScaled(lin.(*solve.Dense), ecpKrylovFull)
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
			d, err = lin.Solve(grad, m)
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
				if pred, ok := lin.Predicted(grad, d); first && ok && pred > 0 && (f-fc)/pred >= 0.75 {
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
		e.prog.add(1)
	}
	r.bases, r.traces = nil, nil
	e.prog.end() // also when the refit stopped early
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
	if r.batch != ecpBatch || r.rv.y0 == nil {
		e.prev = nil // run cannot replay them: memory for the refit
	}
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
				for q := 0; q < len(z); q += l.Out {
					for i, v := range z[q : q+l.Out] {
						wx[q+i] = v - l.B[i]
					}
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
	for q := 0; q < len(b.wx); q += l.Out {
		for i, v := range b.wx[q : q+l.Out] {
			z.Data[q+i] = v + l.B[i]
		}
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
