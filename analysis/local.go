package analysis

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ecprune/ecprune/onnxio"
)

// Local objectives. EC measures a removal by the change it brings to the
// model's outputs, through J_i(n) = dy(n)/dz_i. Some ops carry no
// derivative: piecewise-constant ones (Floor, Ceil, Round, Sign), ops with
// integer or boolean outputs (ArgMax, comparisons, Shape) and ops whose
// kernel has none. Their derivative is zero almost everywhere, so a layer
// whose every path to the outputs crosses one would get g = 0 throughout:
// every weight would look free to remove, and the layer would be emptied
// first. Such a layer is analysed with its local objective instead: the
// identity as the output Jacobian at its own output, g_i(n) = 1, so that a
// weight's importance is the compensated change of the layer's own output
// (pre-activation), (1/N) sum_n (w_ij (a_j(n) - mean_n a_j))^2, and the
// bias still takes delta_ij. Layers with at least one differentiable path
// keep the output-level objective (the blocked paths contribute nothing to
// their J, which is their true derivative). Local and output-level
// importances are in different units, so selection ranks local layers
// among their own weights (see prune.Select and docs/METHOD.md).

// zeroDerivative are op types whose output is piecewise constant in their
// inputs: a derivative of zero almost everywhere.
var zeroDerivative = map[string]bool{"Floor": true, "Ceil": true, "Round": true, "Sign": true}

// dataSlotsOnly are ops some of whose float inputs are parameters the
// kernel does not differentiate (Resize's roi and scales): only the first
// input carries a derivative.
var dataSlotsOnly = map[string]bool{"Resize": true, "Upsample": true}

// edgeDerivative reports whether op passes a derivative from its input
// slot k (an ONNX input position for OpNode ops, an index into In for the
// others) to its output.
func edgeDerivative(op *onnxio.Op, k int) bool {
	if op.Kind != onnxio.OpNode {
		return true
	}
	if !Differentiable(op) || zeroDerivative[op.Type] {
		return false
	}
	if dataSlotsOnly[op.Type] && k > 0 {
		return false
	}
	return k < len(op.InTypes) && isFloatType(op.InTypes[k])
}

// opInputs calls f with each input value of op and its slot (see
// edgeDerivative).
func opInputs(op *onnxio.Op, f func(v, k int)) {
	if op.Kind == onnxio.OpNode && op.Slots != nil {
		for k, s := range op.Slots {
			if s >= 0 {
				f(op.In[s], k)
			}
		}
		return
	}
	for k, v := range op.In {
		f(v, k)
	}
}

// LocalObjectives lists the layers of a network analysed with their local
// objective, each with the reason: the ops without a derivative that
// every path from the layer's output to the graph outputs crosses. A
// layer used by several dense ops (a shared weight) is local only when
// every use is.
func LocalObjectives(net *onnxio.Network) map[*onnxio.Layer]string {
	nv := len(net.Values)
	// live: the value influences a graph output at all; diff: through
	// ops that carry a derivative.
	live, diff := make([]bool, nv), make([]bool, nv)
	for _, id := range net.Outputs {
		live[id] = true
		t := int32(0)
		if id < len(net.Types) {
			t = net.Types[id]
		}
		diff[id] = isFloatType(t)
	}
	for i := len(net.Ops) - 1; i >= 0; i-- {
		op := &net.Ops[i]
		if !live[op.Out] {
			continue
		}
		opInputs(op, func(v, k int) {
			live[v] = true
			if diff[op.Out] && edgeDerivative(op, k) {
				diff[v] = true
			}
		})
	}
	consumers := make([][]int, nv)
	for i := range net.Ops {
		for _, v := range net.Ops[i].In {
			consumers[v] = append(consumers[v], i)
		}
	}
	out := map[*onnxio.Layer]string{}
	reached := map[*onnxio.Layer]bool{}
	blockers := map[*onnxio.Layer]map[int]bool{}
	for i := range net.Ops {
		op := &net.Ops[i]
		if op.Kind != onnxio.OpDense || op.Layer == nil || !op.Layer.Prunable {
			continue
		}
		l := op.Layer
		if diff[op.Out] {
			reached[l] = true
			continue
		}
		if blockers[l] == nil {
			blockers[l] = map[int]bool{}
		}
		findBlockers(net, consumers, live, diff, op.Out, blockers[l])
	}
	for l, b := range blockers {
		if reached[l] {
			continue
		}
		out[l] = localReason(net, b)
	}
	return out
}

// findBlockers walks from value v towards the outputs along live values
// and records the ops where the derivative stops: an op whose output
// influences the outputs but that passes no derivative from v's side.
func findBlockers(net *onnxio.Network, consumers [][]int, live, diff []bool, v int, found map[int]bool) {
	seen := map[int]bool{}
	stack := []int{v}
	for len(stack) > 0 {
		u := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[u] {
			continue
		}
		seen[u] = true
		for _, c := range consumers[u] {
			op := &net.Ops[c]
			if !live[op.Out] {
				continue
			}
			passes := false
			opInputs(op, func(in, k int) {
				if in == u && edgeDerivative(op, k) {
					passes = true
				}
			})
			if passes {
				stack = append(stack, op.Out)
			} else {
				found[c] = true
			}
		}
	}
}

// localReason names the ops that stop the derivative, in graph order.
func localReason(net *onnxio.Network, ops map[int]bool) string {
	idx := make([]int, 0, len(ops))
	for i := range ops {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var names []string
	for _, i := range idx {
		op := &net.Ops[i]
		names = append(names, fmt.Sprintf("%s (node %s)", op, op.Node))
	}
	if len(names) == 0 {
		return "no path to the outputs carries a derivative"
	}
	if len(names) == 1 {
		return "path to the outputs crosses " + names[0] + ", which has no derivative"
	}
	return "paths to the outputs cross " + strings.Join(names, ", ") + ", which have no derivative"
}

// Treatment says how the analysis will treat a layer, for inspect and the
// reports: "output-level", "local objective: <reason>" or
// "not prunable: <reason>". local is LocalObjectives of the layer's
// network.
func Treatment(l *onnxio.Layer, local map[*onnxio.Layer]string) string {
	if !l.Prunable {
		return "not prunable: " + l.Reason
	}
	if why, ok := local[l]; ok {
		return "local objective: " + why
	}
	return "output-level"
}

// local returns the statistics' local layers, computing them on first
// use (Stats built by hand, as ec+'s passes do, leave them nil).
func (s *Stats) local(net *onnxio.Network) map[*onnxio.Layer]string {
	if s.Local == nil {
		s.Local = LocalObjectives(net)
	}
	return s.Local
}

// fillLocal sets g = 1 (the identity Jacobian at the layer's output) for
// every local layer of st, g holding one [rows, Out] slice per layer.
func fillLocal(net *onnxio.Network, st *Stats, g [][]float64) {
	local := st.local(net)
	if len(local) == 0 {
		return
	}
	for i, ls := range st.Layers {
		if _, ok := local[ls.Layer]; ok {
			for q := range g[i] {
				g[i][q] = 1
			}
		}
	}
}

// derivativeCriteria are the criteria whose scores weigh removals by g or
// by the loss gradient: on local layers they are in other units than on
// the rest, so their scores carry the local layers for selection.
var derivativeCriteria = map[string]bool{"ec": true, "ec-nocomp": true, "gradient": true, "taylor": true}

// localScores is Scores.Local for a criterion's scores: the local layers
// of st when the criterion uses derivatives, else nil.
func localScores(name string, st *Stats) map[*onnxio.Layer]string {
	if !derivativeCriteria[name] || st.Net == nil {
		return nil
	}
	local := st.local(st.Net)
	if len(local) == 0 {
		return nil
	}
	out := make(map[*onnxio.Layer]string, len(local))
	for _, ls := range st.Layers {
		if why, ok := local[ls.Layer]; ok {
			out[ls.Layer] = why
		}
	}
	return out
}

// globalLayers are the indices into st.Layers of the layers analysed at
// the outputs, and their wanted values (want[i] for each).
func globalLayers(st *Stats, local map[*onnxio.Layer]string, want []int) (idx, values []int) {
	for i, ls := range st.Layers {
		if _, ok := local[ls.Layer]; !ok {
			idx = append(idx, i)
			values = append(values, want[i])
		}
	}
	return idx, values
}

// logLocal says which layers use their local objective, and why.
func logLocal(local map[*onnxio.Layer]string, logf func(string, ...any)) {
	names := make([]string, 0, len(local))
	for l := range local {
		names = append(names, l.Name)
	}
	sort.Strings(names)
	for _, name := range names {
		for l, why := range local {
			if l.Name == name {
				logf("analysis: layer %s: local objective (its own output's change): %s", name, why)
			}
		}
	}
}
