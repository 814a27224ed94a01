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

// A tied weight (Layer.Tie) has one LayerPlan per dense use, all with the
// same mask mapped through StoredIndex: Plan.Removed and Plan.Total count
// its stored elements once, each use's Removed counts its own view.

// Plan is the pruning of every prunable layer.
type Plan struct {
	Layers  []*LayerPlan
	Removed int
	Total   int // prunable weights (a tied weight's elements once)
	// Objective names what a method matched beyond its selection (ec+'s
	// refit), or is empty.
	Objective string
	// Task is the task a method recognised from the model itself (ec+
	// without labels or a named task), or empty when it was given.
	Task analysis.Task
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
	return selectPlan(net, sc, opt, selCopy)
}

// SelectMasks is Select without the new weights and biases: the plan's
// masks, counts and predictions only (LayerPlan W, B and BiasShift nil),
// for a caller that needs to know what goes, not the pruned model (ec+'s
// budgets), and would otherwise hold a float64 copy of every weight.
func SelectMasks(net *onnxio.Network, sc *analysis.Scores, opt Options) (*Plan, error) {
	return selectPlan(net, sc, opt, selMasks)
}

// SelectConsuming is Select for a caller that has no further use for sc:
// each layer's new weights (LayerPlan.W) are written into the storage of
// its Score once the layer's removals are counted, instead of into a copy
// of the weights, and sc's Score and Delta slices are set to nil. The plan
// is the same as Select's, bit for bit; sc is spent.
func SelectConsuming(net *onnxio.Network, sc *analysis.Scores, opt Options) (*Plan, error) {
	return selectPlan(net, sc, opt, selConsume)
}

// What selectPlan builds besides the masks: the new weights in a copy
// (Select), in the scores' storage (SelectConsuming), or nothing.
const (
	selCopy = iota
	selConsume
	selMasks
)

// selUnit is what selection ranks as one tensor: a layer, or a tie group
// (every dense use of a shared weight) whose score is the sum of its uses'
// scores per stored element.
type selUnit struct {
	tie      *onnxio.Tie
	uses     []int     // indices into sc.Layers
	score    []float64 // a layer's scores, or the tie's in stored order
	pruned   []bool    // the layer's mask, or the tie's in stored order
	rows, in int       // shape of score for N:M (rows of in)
}

// selectionUnits groups sc's layers into what is selected as one tensor.
// A tie's score of a stored element is the sum of its dense uses' scores
// and of the scores of its non-dense uses (sc.Ties), or their mean for
// scores that do not add up over uses (sc.TieMean).
func selectionUnits(sc *analysis.Scores, plan *Plan) []*selUnit {
	var units []*selUnit
	byTie := map[*onnxio.Tie]*selUnit{}
	for li, ls := range sc.Layers {
		l := ls.Layer
		if l.Tie == nil {
			units = append(units, &selUnit{uses: []int{li}, score: ls.Score, pruned: plan.Layers[li].Pruned, rows: l.Out, in: l.In})
			continue
		}
		u := byTie[l.Tie]
		if u == nil {
			t := l.Tie
			u = &selUnit{tie: t, score: make([]float64, t.Size()), pruned: make([]bool, t.Size()), rows: t.Rows, in: t.Cols}
			for _, ts := range sc.Ties {
				if ts.Tie == t && len(ts.Score) == t.Size() {
					copy(u.score, ts.Score)
				}
			}
			byTie[t] = u
			units = append(units, u)
		}
		u.uses = append(u.uses, li)
		for q, v := range ls.Score {
			u.score[l.StoredIndex(q)] += v
		}
	}
	if sc.TieMean {
		for _, u := range units {
			if u.tie != nil && len(u.uses) > 1 {
				for k := range u.score {
					u.score[k] /= float64(len(u.uses))
				}
			}
		}
	}
	return units
}

func selectPlan(net *onnxio.Network, sc *analysis.Scores, opt Options, mode int) (*Plan, error) {
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
	}
	units := selectionUnits(sc, plan)
	for _, u := range units {
		plan.Total += len(u.score) // a tie's stored elements count once
	}
	// unitOpt says whether a unit is skipped or has a fixed sparsity: a
	// tie is when any of its uses is named (they share the name).
	unitOpt := func(u *selUnit) (skipped bool, s float64, isFixed bool) {
		for _, li := range u.uses {
			l := sc.Layers[li].Layer
			skipped = skipped || skip[l]
			if v, ok := fixed[l]; ok && !isFixed {
				s, isFixed = v, true
			}
		}
		return skipped, s, isFixed
	}
	// A unit scored on its local objective (a tie: any of its uses) has
	// scores in other units than the rest: it meets the sparsity on its
	// own (docs/METHOD.md, "Local objectives").
	isLocal := func(u *selUnit) bool {
		for _, li := range u.uses {
			if _, local := sc.Local[sc.Layers[li].Layer]; local {
				return true
			}
		}
		return false
	}
	// Global ranking runs over the units that are neither skipped nor
	// fixed nor scored on their local objective, positions numbered
	// through them in layer order, so that ties go by layer, then by index
	// in W (a tie group's stored order).
	var owner []*selUnit
	var parts [][]float64
	total := 0
	for _, u := range units {
		skipped, s, isFixed := unitOpt(u)
		if skipped {
			continue
		}
		if opt.NM != nil {
			selectNM(u.pruned, u.score, u.rows, u.in, *opt.NM)
			continue
		}
		one := func(s float64) {
			MarkSmallest([][]float64{u.score}, Count(s, len(u.score)), func(_, q int) { u.pruned[q] = true })
		}
		if isFixed {
			one(s)
			continue
		}
		if opt.Scope == Layer || isLocal(u) {
			one(opt.Sparsity)
			continue
		}
		owner = append(owner, u)
		parts = append(parts, u.score)
		total += len(u.score)
	}
	if total > 0 {
		MarkSmallest(parts, Count(opt.Sparsity, total), func(b, q int) {
			owner[b].pruned[q] = true
		})
	}
	for _, u := range units {
		if u.tie == nil {
			continue
		}
		for _, li := range u.uses {
			l := sc.Layers[li].Layer
			for q := range plan.Layers[li].Pruned {
				plan.Layers[li].Pruned[q] = u.pruned[l.StoredIndex(q)]
			}
		}
		for _, p := range u.pruned {
			if p {
				plan.Removed++
			}
		}
		// The non-dense uses' part of the prediction goes with the first
		// dense use.
		for _, ts := range sc.Ties {
			if ts.Tie != u.tie || len(ts.Score) != len(u.pruned) {
				continue
			}
			for q, p := range u.pruned {
				if p && !math.IsNaN(ts.Score[q]) {
					plan.Layers[u.uses[0]].Predicted += ts.Score[q]
				}
			}
		}
	}
	for li, ls := range sc.Layers {
		lp := plan.Layers[li]
		l := ls.Layer
		if mode == selMasks {
			for q, p := range lp.Pruned {
				if p {
					lp.Removed++
					if !math.IsNaN(ls.Score[q]) {
						lp.Predicted += ls.Score[q]
					}
				}
			}
			if l.Tie == nil {
				plan.Removed += lp.Removed
			}
			continue
		}
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
		if mode == selConsume {
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
		if l.Tie == nil {
			plan.Removed += lp.Removed
		}
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
	done := map[*onnxio.Tie]bool{}
	for _, lp := range plan.Layers {
		l := c.Layers[lp.Layer.Index]
		l.SetWeights(lp.W)
		if lp.B != nil {
			l.B = append([]float64(nil), lp.B...)
		}
		if t := lp.Layer.Tie; t != nil && !done[t] {
			// The tie's embedding uses read the pruned tensor too.
			done[t] = true
			c.PruneTieGathers(t, StoredMask(lp))
		}
	}
	return c
}

// StoredMask is a tied layer's removals in its weight's stored order.
func StoredMask(lp *LayerPlan) []bool {
	l := lp.Layer
	size := l.Params()
	if l.Tie != nil {
		size = max(size, l.Tie.Size()) // a block of the tensor is part of it
	}
	m := make([]bool, size)
	for q := range l.Params() {
		if lp.Pruned != nil {
			m[l.StoredIndex(q)] = lp.Pruned[q]
		} else {
			m[l.StoredIndex(q)] = lp.W[q] == 0
		}
	}
	return m
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
