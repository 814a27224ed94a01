package prune

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// ECPlusOptions are the knobs of ec+ (issue 7's recipe).
type ECPlusOptions struct {
	Lambda     float64 // g_i(n) += Lambda * mean_n g_i(n)
	C          float64 // weight of the residual-cancelling credit
	Rounds     int     // greedy rounds per layer
	RefitSteps int     // Levenberg-Marquardt steps on all biases
	// Recon is where the kept weights are refitted by least squares:
	// ReconAuto (decided per layer on held-out samples), ReconOn, ReconOff.
	Recon string
	// ReconDamp is the reconstruction's damping relative to the mean
	// diagonal of the inputs' Gram matrix.
	ReconDamp float64
	// Seed is the statistics pass's seed (StatsOptions.Seed): with
	// probes, ec+'s own passes draw the same signs, so that its result
	// does not depend on whether Prep kept the statistics pass's g.
	Seed uint64
	// Prep, if set, holds what the statistics pass kept for ec+.
	Prep *ECPlusPrep
}

// RegisterFlags adds ec+'s flags with their defaults.
func (o *ECPlusOptions) RegisterFlags(fs *pflag.FlagSet) {
	fs.Float64Var(&o.Lambda, "ecplus-lambda", 1, "ec+: g_i(n) += lambda * mean_n g_i(n)")
	fs.Float64Var(&o.C, "ecplus-c", 0.5, "ec+: weight of the credit for removals that cancel upstream residuals")
	fs.IntVar(&o.Rounds, "ecplus-rounds", 4, "ec+: greedy rounds per layer")
	fs.IntVar(&o.RefitSteps, "ecplus-refit", 2, "ec+: Levenberg-Marquardt steps of the final bias refit (0: none)")
	fs.StringVar(&o.Recon, "ecplus-recon", ReconAuto, "ec+: least-squares reconstruction of the kept weights: auto (where it lowers the error on held-out calibration samples), on, off")
	fs.Float64Var(&o.ReconDamp, "ecplus-recon-damp", 0.01, "ec+: reconstruction damping, relative to the mean diagonal of the inputs' Gram matrix")
}

func (o ECPlusOptions) validate() error {
	switch {
	case math.IsNaN(o.Lambda) || math.IsInf(o.Lambda, 0) || o.Lambda < 0:
		// A negative lambda could make weights negative and the
		// weighted variances meaningless.
		return optErr("--ecplus-lambda %g: want a finite value >= 0", o.Lambda)
	case math.IsNaN(o.C) || math.IsInf(o.C, 0):
		return optErr("--ecplus-c %g: want a finite value", o.C)
	case o.Rounds < 1:
		return optErr("--ecplus-rounds %d: want at least 1", o.Rounds)
	case o.RefitSteps < 0:
		return optErr("--ecplus-refit %d: want 0 or more", o.RefitSteps)
	case o.Recon != "" && o.Recon != ReconAuto && o.Recon != ReconOn && o.Recon != ReconOff:
		return optErr("--ecplus-recon %q: want auto, on or off", o.Recon)
	case math.IsNaN(o.ReconDamp) || math.IsInf(o.ReconDamp, 0) || o.ReconDamp < 0:
		return optErr("--ecplus-recon-damp %g: want a finite value >= 0", o.ReconDamp)
	}
	return nil
}

// Memory and cost thresholds of ec+, in float64 values. Variables so that
// tests can force the streaming and matrix-free paths on small networks.
var (
	// ecpMemLimit bounds each in-memory cache: the original network's g
	// and pre-activations of all layers, one layer's per-sample a', e and
	// g (resident mode), the refit's targets and traces.
	ecpMemLimit = 1 << 25
	// ecpPerParam raises that bound to this many float64 values per
	// prunable weight: a model of tens of millions of weights already
	// holds them as float64, and its caches must fit for ec+ to cost a
	// few analyses rather than one per layer (tests set it to 0).
	ecpPerParam = 2
	// ecpJacLimit is the recipe's N*K*B bound above which the refit is
	// solved matrix-free instead of assembling the Gauss-Newton matrix.
	ecpJacLimit = 5e7
	// ecpGather bounds N*K*B for gathering the whole Jacobian before its
	// Gram product (else the product is accumulated batch by batch).
	ecpGather = 1 << 23
	// ecpMaxDense bounds B, the number of biases, for the assembled
	// B x B Gauss-Newton matrix and its Cholesky factor.
	ecpMaxDense = 4096
)

// memLimit is the size in bytes each of ec+'s caches may take on net:
// ecpMemLimit float64 values, or ecpPerParam per prunable weight if more.
func memLimit(net *onnxio.Network) int {
	params := 0
	for _, l := range net.Layers {
		if l.Prunable {
			params += l.Params()
		}
	}
	return 8 * max(ecpMemLimit, ecpPerParam*params)
}

// ecpBatch is the number of calibration samples per batch (a variable
// so that tests can cover several batches with few samples).
var ecpBatch = 256

// ECPlus is sequential, error-aware EC with a Gauss-Newton bias refit.
//
//  1. Budgets: prune.Select on the one-shot EC scores ec fixes k_l, the
//     number of weights removed from each layer (so --scope, --skip and
//     --layer-sparsity keep their meaning).
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
func ECPlus(net *onnxio.Network, data analysis.Data, st *analysis.Stats, ec *analysis.Scores, opt Options, eo ECPlusOptions, task analysis.Task, logf func(string, ...any)) (*Plan, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if net == nil || data == nil || st == nil || ec == nil {
		return nil, errors.New("ec+: missing network, data, statistics or EC scores")
	}
	if err := eo.validate(); err != nil {
		return nil, err
	}
	if opt.NM != nil {
		return nil, optErr("--nm is not supported with ec+")
	}
	if len(ec.Layers) != len(st.Layers) {
		return nil, fmt.Errorf("ec+: %d layers of EC scores for %d layers of statistics", len(ec.Layers), len(st.Layers))
	}
	for i, ls := range st.Layers {
		if ec.Layers[i].Layer != ls.Layer {
			return nil, fmt.Errorf("ec+: EC scores and statistics disagree on layer %d", i)
		}
		if ls.Op < 0 || ls.Op >= len(net.Ops) || net.Ops[ls.Op].Layer != ls.Layer {
			return nil, fmt.Errorf("ec+: statistics of layer %q do not belong to this network", ls.Layer.Name)
		}
	}
	budget, err := Select(net, ec, opt)
	if err != nil {
		return nil, fmt.Errorf("ec+: budgets: %w", err)
	}
	// Only the counts are needed: the budget plan's masks and weights (and
	// the scores, if the caller lets them go) are garbage from here on.
	total := budget.Total
	ks := make([]int, len(budget.Layers))
	tieMasks := map[int][]bool{} // tied weights keep the one-shot selection (ecplus_tie.go)
	for li, lp := range budget.Layers {
		ks[li] = lp.Removed
		if lp.Layer.Tie != nil {
			tieMasks[li] = lp.Pruned
		}
	}

	e, err := newECP(net, data, st, eo, task, logf)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if eo.Prep.take(e) {
		logf("ec+: g of the original network kept from the statistics pass")
	} else {
		if err := e.origPass(); err != nil {
			return nil, fmt.Errorf("ec+: original network: %w", err)
		}
		logf("ec+: g of the original network in %s", time.Since(t0).Round(time.Millisecond))
	}
	cur := net.Clone()
	for _, l := range cur.Layers {
		l.Own64() // ec+ removes weights of its copy in place, in float64
	}
	plan := &Plan{Total: total}
	gathersDone := map[*onnxio.Tie]bool{}
	for li, ls := range st.Layers {
		k := ks[li]
		var res *ecpLayerResult
		if mask, tied := tieMasks[li]; tied {
			res, err = e.pruneTied(cur, li, mask, gathersDone)
		} else {
			res, err = e.pruneLayer(cur, li, k)
		}
		if err != nil {
			return nil, fmt.Errorf("ec+: layer %q: %w", ls.Layer.Name, err)
		}
		plan.Layers = append(plan.Layers, &LayerPlan{Layer: ls.Layer, Pruned: res.pruned, Removed: res.removed, Predicted: res.predicted})
	}
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
	for li, ls := range st.Layers {
		lp := plan.Layers[li]
		cl := cur.Ops[ls.Op].Layer
		lp.W, lp.B = cl.W, cl.B // cur is ec+'s own copy, dropped here
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
