package prune

import (
	"fmt"
	"math"
	"sort"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// Scope says over what set the sparsity is met.
type Scope string

const (
	Global Scope = "global" // one ranking over all prunable layers
	Layer  Scope = "layer"  // each layer at the sparsity on its own
)

// NM is an N:M pattern: keep N of every M consecutive weights of a row.
type NM struct{ N, M int }

// Options say what to prune.
type Options struct {
	Sparsity float64
	Scope    Scope
	// LayerSparsity fixes the sparsity of named layers (weight initializer
	// or node name); they are ranked on their own.
	LayerSparsity map[string]float64
	// Skip names layers left dense.
	Skip []string
	// NM, when set, replaces Sparsity by an N:M pattern in every layer.
	NM *NM
	// Compensate adds the summed delta of pruned weights to the bias
	// (only for scores that carry deltas).
	Compensate bool
}

// OptionError is a bad option value: Field names the option (a field of
// Options, UnitOptions or ecplus.Options) and Msg what is wrong with it,
// so that a front end can name the option its own way (the CLI names its
// flags). Error is "Field Msg".
type OptionError struct{ Field, Msg string }

func (e *OptionError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + " " + e.Msg
}

func optErr(field, format string, args ...any) error {
	return &OptionError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// LayerPlan is the outcome for one layer.
type LayerPlan struct {
	Layer     *onnxio.Layer
	Pruned    []bool    // Out x In: true where the weight is removed
	W         []float64 // new weights
	B         []float64 // new bias, or nil when the bias is unchanged and absent
	BiasShift []float64 // added to the bias (nil without compensation)
	Removed   int
	Predicted float64 // sum of the scores of removed weights (for ec: first-order error)
}

// Plan is the pruning of every prunable layer.
type Plan struct {
	Layers  []*LayerPlan
	Removed int
	Total   int // prunable weights
	// Objective names what a method matched beyond its selection (ec+'s
	// refit), or is empty.
	Objective string
}

// Validate checks option values, naming what is wrong.
func (o Options) Validate(net *onnxio.Network) error {
	if o.NM == nil && (o.Sparsity < 0 || o.Sparsity >= 1 || math.IsNaN(o.Sparsity)) {
		return optErr("Sparsity", "%g is outside [0, 1)", o.Sparsity)
	}
	if o.Scope != Global && o.Scope != Layer && o.Scope != "" {
		return optErr("Scope", "%q: want global or layer", o.Scope)
	}
	if o.NM != nil && (o.NM.N < 0 || o.NM.M <= 0 || o.NM.N > o.NM.M) {
		return optErr("NM", "%d:%d: want 0 <= N <= M, M > 0", o.NM.N, o.NM.M)
	}
	for _, s := range o.Skip {
		if net.LayerByName(s) == nil {
			return optErr("Skip", "%s: no such layer", s)
		}
	}
	for name, s := range o.LayerSparsity {
		l := net.LayerByName(name)
		if l == nil {
			return optErr("LayerSparsity", "%s: no such layer", name)
		}
		if !l.Prunable {
			return optErr("LayerSparsity", "%s: layer is not prunable: %s", name, l.Reason)
		}
		if s < 0 || s >= 1 || math.IsNaN(s) {
			return optErr("LayerSparsity", "%s=%g is outside [0, 1)", name, s)
		}
	}
	return nil
}

// Count is METHOD.md's k = floor(s*P + 0.5).
func Count(s float64, p int) int {
	return int(math.Floor(s*float64(p) + 0.5))
}

// Select picks the weights to remove from scores and builds the new
// weights and biases. sc is not modified.
func Select(net *onnxio.Network, sc *analysis.Scores, opt Options) (*Plan, error) {
	return selectPlan(net, sc, opt, false)
}

// SelectConsuming is Select for a caller that has no further use for sc:
// each layer's new weights (LayerPlan.W) are written into the storage of
// its Score once the layer's removals are counted, instead of into a copy
// of the weights, and sc's Score and Delta slices are set to nil. The plan
// is the same as Select's, bit for bit; sc is spent.
func SelectConsuming(net *onnxio.Network, sc *analysis.Scores, opt Options) (*Plan, error) {
	return selectPlan(net, sc, opt, true)
}

func selectPlan(net *onnxio.Network, sc *analysis.Scores, opt Options, consume bool) (*Plan, error) {
	if err := opt.Validate(net); err != nil {
		return nil, err
	}
	skip := map[*onnxio.Layer]bool{}
	for _, s := range opt.Skip {
		skip[net.LayerByName(s)] = true
	}
	fixed := map[*onnxio.Layer]float64{}
	for name, s := range opt.LayerSparsity {
		fixed[net.LayerByName(name)] = s
	}
	plan := &Plan{}
	for _, ls := range sc.Layers {
		plan.Layers = append(plan.Layers, &LayerPlan{Layer: ls.Layer, Pruned: make([]bool, ls.Layer.Params())})
		plan.Total += ls.Layer.Params()
	}
	// Global ranking runs over the layers that are neither skipped nor
	// fixed nor scored on their local objective, positions numbered
	// through them in layer order, so that ties go by layer, then by index
	// in W.
	var owner []int
	var parts [][]float64
	total := 0
	for li, ls := range sc.Layers {
		l := ls.Layer
		lp := plan.Layers[li]
		if skip[l] {
			continue
		}
		if opt.NM != nil {
			selectNM(lp.Pruned, ls.Score, l.Out, l.In, *opt.NM)
			continue
		}
		one := func(s float64) {
			MarkSmallest([][]float64{ls.Score}, Count(s, len(ls.Score)), func(_, q int) { lp.Pruned[q] = true })
		}
		if s, ok := fixed[l]; ok {
			one(s)
			continue
		}
		if _, local := sc.Local[l]; opt.Scope == Layer || local {
			// A layer scored on its local objective has scores in
			// other units than the rest: it meets the sparsity on
			// its own (docs/METHOD.md, "Local objectives").
			one(opt.Sparsity)
			continue
		}
		owner = append(owner, li)
		parts = append(parts, ls.Score)
		total += len(ls.Score)
	}
	if total > 0 {
		MarkSmallest(parts, Count(opt.Sparsity, total), func(b, q int) {
			plan.Layers[owner[b]].Pruned[q] = true
		})
	}
	for li, ls := range sc.Layers {
		lp := plan.Layers[li]
		l := ls.Layer
		if l.B != nil {
			lp.B = append([]float64(nil), l.B...)
		}
		compensate := opt.Compensate && ls.Delta != nil
		if compensate {
			lp.BiasShift = make([]float64, l.Out)
		}
		for q, p := range lp.Pruned {
			if !p {
				continue
			}
			lp.Removed++
			if !math.IsNaN(ls.Score[q]) {
				lp.Predicted += ls.Score[q]
			}
			if compensate {
				lp.BiasShift[q/l.In] += ls.Delta[q]
			}
		}
		if consume {
			// The scores are summed: their storage takes the weights.
			lp.W = ls.Score
			ls.Score, ls.Delta = nil, nil
		} else {
			lp.W = make([]float64, l.Params())
		}
		for q, p := range lp.Pruned {
			if p {
				lp.W[q] = 0
			} else {
				lp.W[q] = l.At(q)
			}
		}
		if compensate {
			nonzero := false
			for _, d := range lp.BiasShift {
				nonzero = nonzero || d != 0
			}
			if lp.B == nil && nonzero {
				lp.B = make([]float64, l.Out)
			}
			if lp.B != nil {
				for i, d := range lp.BiasShift {
					lp.B[i] += d
				}
			}
		}
		plan.Removed += lp.Removed
	}
	return plan, nil
}

// selectNM marks, in each row, all but the N highest-scoring weights of
// every M consecutive ones (a shorter last group keeps up to N).
func selectNM(pruned []bool, score []float64, out, in int, nm NM) {
	idx := make([]int, 0, nm.M)
	for i := 0; i < out; i++ {
		for g := 0; g < in; g += nm.M {
			idx = idx[:0]
			for j := g; j < min(in, g+nm.M); j++ {
				idx = append(idx, i*in+j)
			}
			sort.Slice(idx, func(a, b int) bool {
				return CompareScored(Scored{score[idx[a]], idx[a]}, Scored{score[idx[b]], idx[b]}) < 0
			})
			for _, q := range idx[:max(0, len(idx)-nm.N)] {
				pruned[q] = true
			}
		}
	}
}

// Apply installs a plan's weights and biases into a copy of the network,
// for evaluating the pruned model without writing it.
func Apply(net *onnxio.Network, plan *Plan) *onnxio.Network {
	c := net.Clone()
	for _, lp := range plan.Layers {
		l := c.Layers[lp.Layer.Index]
		l.SetWeights(lp.W)
		if lp.B != nil {
			l.B = append([]float64(nil), lp.B...)
		}
	}
	return c
}

// Density is the fraction of non-zero weights of a plan's layer.
func (lp *LayerPlan) Density() float64 {
	nz := 0
	for _, w := range lp.W {
		if w != 0 {
			nz++
		}
	}
	return float64(nz) / float64(len(lp.W))
}
