package ecplus

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// Options are the knobs of ec+. The zero value is not usable (Rounds must
// be at least 1): start from DefaultOptions.
type Options struct {
	Lambda     float64 // g_i(n) += Lambda * mean_n g_i(n)
	C          float64 // weight of the residual-cancelling credit
	Rounds     int     // greedy rounds per layer
	RefitSteps int     // Levenberg-Marquardt steps on all biases (0: no refit)
	// Recon is where the kept weights are refitted by least squares:
	// ReconAuto (decided per layer on held-out samples; also ""), ReconOn,
	// ReconOff.
	Recon string
	// ReconDamp is the reconstruction's damping relative to the mean
	// diagonal of the inputs' Gram matrix.
	ReconDamp float64
	// Budgets is how the global ranking's per-layer counts are set:
	// BudgetsOneShot (also "", the default) is EC's one-shot ranking;
	// BudgetsRefined corrects it by the error each layer's removals
	// actually leave, measured by a probe on a quarter of the samples
	// (allocate.go; experimental: on the measured models it is not
	// better overall, see docs/METHOD.md). Per-layer scope is not
	// affected.
	Budgets string
	// Seed is the statistics pass's seed (StatsOptions.Seed): with
	// probes, ec+'s own passes draw the same signs, so that its result
	// does not depend on whether Prep kept the statistics pass's g.
	Seed uint64
	// Prep, if set, holds what the statistics pass kept for ec+. A
	// caller that runs Prune once can drop its own reference to the Prep
	// before the call: Prune then frees the Prep's caches (the original
	// network's g and z of every layer) before its refit.
	Prep *Prep
	// Progress, if set, is told how far each phase that takes a while
	// is: PhaseDense (samples), PhaseSelection (greedy rounds, counting a
	// layer's first pass as one) and PhaseRefit (Levenberg-Marquardt
	// steps), in that order, each from done 0 up to done == total. It is
	// called from the goroutine running Prune and does not change the
	// result.
	Progress func(phase string, done, total int)
}

// Phases Options.Progress reports.
const (
	PhaseDense     = "ec+ dense model" // the pass over the original network (skipped with a Prep)
	PhaseSelection = "ec+ selection"
	PhaseRefit     = "ec+ refit"
)

// DefaultOptions is the recommended setting, the one measured in
// docs/ecplus-results.md and the CLI's defaults.
func DefaultOptions() Options {
	return Options{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2, Recon: ReconAuto, ReconDamp: 0.01, Budgets: BudgetsOneShot}
}

// validate checks the values, naming the field that is wrong.
func (o Options) validate() error {
	switch {
	case math.IsNaN(o.Lambda) || math.IsInf(o.Lambda, 0) || o.Lambda < 0:
		// A negative lambda could make weights negative and the
		// weighted variances meaningless.
		return optErr("Lambda", "%g: want a finite value >= 0", o.Lambda)
	case math.IsNaN(o.C) || math.IsInf(o.C, 0):
		return optErr("C", "%g: want a finite value", o.C)
	case o.Rounds < 1:
		return optErr("Rounds", "%d: want at least 1", o.Rounds)
	case o.RefitSteps < 0:
		return optErr("RefitSteps", "%d: want 0 or more", o.RefitSteps)
	case o.Recon != "" && o.Recon != ReconAuto && o.Recon != ReconOn && o.Recon != ReconOff:
		return optErr("Recon", "%q: want auto, on or off", o.Recon)
	case math.IsNaN(o.ReconDamp) || math.IsInf(o.ReconDamp, 0) || o.ReconDamp < 0:
		return optErr("ReconDamp", "%g: want a finite value >= 0", o.ReconDamp)
	case o.Budgets != "" && o.Budgets != BudgetsRefined && o.Budgets != BudgetsOneShot:
		return optErr("Budgets", "%q: want refined or one-shot", o.Budgets)
	}
	return nil
}

// Recon modes of Options.Recon.
const (
	ReconAuto = "auto" // decided per layer on held-out samples
	ReconOn   = "on"   // every layer
	ReconOff  = "off"  // none
)

// TaskAuto is the task of a model whose task neither labels nor the
// caller name: ec+ recognises a classifier from the graph and its calibration
// outputs (see looksLikeLogits) and treats anything else as a regression.
const TaskAuto analysis.Task = ""

// ecpBatch is the number of calibration samples per batch (a variable
// so that tests can cover several batches with few samples).
var ecpBatch = 256

// Prune is ec+: sequential, error-aware EC with a Gauss-Newton bias refit.
//
//  1. Budgets: prune.Select on the one-shot EC scores ec fixes k_l, the
//     number of weights removed from each layer (so opt's Scope, Skip and
//     LayerSparsity keep their meaning; NM is not supported). With
//     eo.Budgets = BudgetsRefined, a probe corrects the global ranking by
//     the error each layer's removals leave (allocate.go).
//  2. Layer by layer in graph order, on the network whose earlier layers
//     are already pruned and corrected, remove k_l weights in eo.Rounds
//     greedy rounds by the cost w^2 Var_g(a') - 2c w Cov_g(e, a'), e being
//     the residual z' - z0 left by the upstream pruning and the removals
//     so far, with per-row quotas from the in-layer EC ranking on a'; then
//     set the bias so that the g-weighted mean of e is zero (the plain
//     mean for a neuron whose g is zero throughout). g is the original
//     network's, flattened by lambda, and weights everything, the quota
//     ranking included.
//  3. Refit all biases at once with eo.RefitSteps Levenberg-Marquardt
//     steps matching the original's outputs on the calibration inputs:
//     squared error, or KL(softmax(y0) || softmax(y')) on the logits for
//     classifiers (a final Softmax or LogSoftmax is cut off), with the
//     (generalised) Gauss-Newton matrix; see refit for the damping.
//
// g comes from GBatch in st's mode (or from Prep). Under the loss
// objective, which needs labels ec+ is not given, it falls back to the
// output objective; probes are drawn again with eo.Seed. Skipped layers
// keep their weights but get the bias correction and the refit.
// LayerPlan.Predicted is the sum of the removal costs over the
// calibration rows, per row.
func Prune(net *onnxio.Network, data analysis.Data, st *analysis.Stats, ec *analysis.Scores, opt prune.Options, eo Options, task analysis.Task, logf func(string, ...any)) (*prune.Plan, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if net == nil || data == nil || st == nil || ec == nil {
		return nil, errors.New("ec+: missing network, data, statistics or EC scores")
	}
	if err := eo.validate(); err != nil {
		return nil, err
	}
	total, ks, tieMasks, err := budgets(net, st, ec, opt)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if ks, tieMasks, err = refineBudgets(net, data, st, ec, opt, eo, task, ks, tieMasks, logf); err != nil {
		return nil, fmt.Errorf("ec+: %w", err)
	}
	logf("ec+: budgets in %s", time.Since(t0).Round(time.Millisecond))

	e, err := newECP(net, data, st, eo, task, logf)
	if err != nil {
		return nil, err
	}
	t0 = time.Now()
	if eo.Prep.take(e) {
		logf("ec+: g of the original network kept from the statistics pass")
		eo.Prep, e.eo.Prep = nil, nil // see dropSelection
	} else {
		e.prog.start(PhaseDense, data.Len())
		if err := e.origPass(); err != nil {
			return nil, fmt.Errorf("ec+: original network: %w", err)
		}
		e.prog.end()
		logf("ec+: g of the original network in %s", time.Since(t0).Round(time.Millisecond))
	}
	// ec+ prunes its copy in place, one layer at a time in float64: the
	// other layers keep float32 weights where they had them (a pruned
	// float32 layer without reconstruction is still float32), so that
	// the copy costs the model's size, not twice that.
	cur := net.Clone()
	shareWeights(cur, net)
	plan := &prune.Plan{Total: total}
	e.prog.start(PhaseSelection, selectionSteps(ks, eo.Rounds))
	gathersDone := map[*onnxio.Tie]bool{}
	for li, ls := range st.Layers {
		k := ks[li]
		var res *ecpLayerResult
		l := cur.Ops[ls.Op].Layer
		l.Own64()
		if mask, tied := tieMasks[li]; tied {
			res, err = e.pruneTied(cur, li, mask, gathersDone)
		} else {
			res, err = e.pruneLayer(cur, li, k)
		}
		if err != nil {
			return nil, fmt.Errorf("ec+: layer %q: %w", ls.Layer.Name, err)
		}
		if ls.Layer.W32 != nil {
			back32(l)
		}
		plan.Layers = append(plan.Layers, &prune.LayerPlan{Layer: ls.Layer, Pruned: res.pruned, Removed: res.removed, Predicted: res.predicted})
		e.dropLayer(li)
	}
	e.prog.end()
	e.dropSelection()
	logf("ec+: sequential selection done at %s", time.Since(t0).Round(time.Millisecond))
	if eo.RefitSteps > 0 {
		if err := e.refit(cur, eo.RefitSteps); err != nil {
			return nil, fmt.Errorf("ec+: bias refit: %w", err)
		}
		logf("ec+: refit done at %s", time.Since(t0).Round(time.Millisecond))
	}
	if eo.RefitSteps > 0 {
		plan.Objective = "bias refit: " + e.rv.why
	}
	if task == TaskAuto {
		plan.Task = analysis.TaskRegression
		if e.rv.kl {
			plan.Task = analysis.TaskClassification
		}
	}
	for li, ls := range st.Layers {
		lp := plan.Layers[li]
		cl := cur.Ops[ls.Op].Layer
		lp.W, lp.B = cl.Weights64(), cl.B // cur is ec+'s own copy, dropped here
		cl.W, cl.W32 = nil, nil
		lp.BiasShift = make([]float64, len(lp.B))
		for i, b := range lp.B {
			lp.BiasShift[i] = b
			if ls.Layer.B != nil {
				lp.BiasShift[i] -= ls.Layer.B[i]
			}
		}
		if t := ls.Layer.Tie; t == nil || t.Layers[0] == ls.Layer {
			plan.Removed += lp.Removed // a tied weight's elements once
		}
	}
	return plan, nil
}

// back32 stores l's float64 weights in float32 when every one of them is
// a float32 number (a layer pruned without reconstruction).
func back32(l *onnxio.Layer) {
	w32 := make([]float32, len(l.W))
	for q, v := range l.W {
		f := float32(v)
		if math.Float64bits(float64(f)) != math.Float64bits(v) {
			return
		}
		w32[q] = f
	}
	l.W, l.W32 = nil, w32
}

func optErr(field, format string, args ...any) error {
	return &prune.OptionError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
