package ecplus

import (
	"fmt"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// ec+'s budgets: how many weights each layer loses (budgets), per row
// (rowQuotas) and per round (roundTake); and how much memory and work its
// caches and solvers may take.

// Memory and cost thresholds of ec+, in float64 values. Variables so that
// tests can force the streaming and matrix-free paths on small networks.
var (
	// ecpMemLimit bounds each in-memory cache: the original network's g
	// and pre-activations of all layers, one layer's per-sample a', e and
	// g (resident mode), the refit's targets and traces.
	ecpMemLimit = 1 << 25
	// ecpPerParam raises that bound to this many float64 values per
	// prunable weight, twice the model file: on a model of tens of
	// millions of weights the original network's g (with probes, in
	// float32) and a layer's per-sample data must fit for ec+ to cost a
	// few analyses rather than one per layer, and a bound of more would
	// let the refit's traces (its bases, their traces, the curvature
	// samples, one bound each) take several times the model, for
	// evaluations that the first layer's product, the part they spare,
	// hardly dominates (tests set it to 0).
	ecpPerParam = 1
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

// budgets checks that the EC scores ec and the statistics st are of net
// and fixes the number of weights removed from each layer, k_l: what
// prune.Select removes on the EC scores with opt. It returns the number of
// prunable weights, the k_l and, by layer index, the masks of the layers
// of tied weights, which keep that selection (tie.go).
func budgets(net *onnxio.Network, st *analysis.Stats, ec *analysis.Scores, opt prune.Options) (int, []int, map[int][]bool, error) {
	if opt.NM != nil {
		return 0, nil, nil, optErr("NM", "is not supported with ec+")
	}
	if len(ec.Layers) != len(st.Layers) {
		return 0, nil, nil, fmt.Errorf("ec+: %d layers of EC scores for %d layers of statistics", len(ec.Layers), len(st.Layers))
	}
	for i, ls := range st.Layers {
		if ec.Layers[i].Layer != ls.Layer {
			return 0, nil, nil, fmt.Errorf("ec+: EC scores and statistics disagree on layer %d", i)
		}
		if ls.Op < 0 || ls.Op >= len(net.Ops) || net.Ops[ls.Op].Layer != ls.Layer {
			return 0, nil, nil, fmt.Errorf("ec+: statistics of layer %q do not belong to this network", ls.Layer.Name)
		}
	}
	budget, err := prune.SelectMasks(net, ec, opt)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("ec+: budgets: %w", err)
	}
	// Only the counts (and the tied layers' masks) are needed, hence no
	// weights (a float64 copy of the model); the other masks (and the
	// scores, if the caller lets them go) are garbage from here on.
	ks := make([]int, len(budget.Layers))
	tied := map[int][]bool{}
	for li, lp := range budget.Layers {
		ks[li] = lp.Removed
		if lp.Layer.Tie != nil {
			tied[li] = lp.Pruned
		}
	}
	return budget.Total, ks, tied, nil
}

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

// rowQuotas ranks all weights of a layer by score (then flat index) and
// counts, per row, how many of the k lowest fall in it.
func rowQuotas(score []float64, out, in, k int) []int {
	quota := make([]int, out)
	prune.MarkSmallest([][]float64{score}, k, func(_, q int) { quota[q/in]++ })
	return quota
}

// roundTake is how many of a row's quota go in round t of T: the quota
// split as evenly as integers allow, summing to quota over the rounds.
func roundTake(quota, t, rounds int) int {
	return quota*(t+1)/rounds - quota*t/rounds
}
