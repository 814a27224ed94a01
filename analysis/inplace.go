package analysis

// In-place scoring. On a large model the per-weight sums S1 and S2 are
// most of the memory of an analysis (16 bytes per weight), and a
// criterion's scores and deltas as much again. A caller that scores once
// and needs nothing of the sums afterwards (the prune command with ec) can
// have the scores written over them instead, halving the peak. The values
// are bit-identical to the copying functions'.

// ECImportanceInPlace is ECImportance written over the layer's statistics:
// the importance goes into S2's storage and the delta into S1's, and S1
// and S2 are set to nil, so that any later use of them fails loudly
// instead of reading scores as sums. S0, Shift and SumA2 are kept.
func (ls *LayerStats) ECImportanceInPlace(n int) (imp, delta []float64) {
	ls.mustHaveSums("ECImportanceInPlace")
	imp, delta = ls.S2, ls.S1
	ls.ecInto(n, imp, delta)
	ls.S1, ls.S2 = nil, nil
	return imp, delta
}

// NoCompImportanceInPlace is NoCompImportance written over S2; S1 and S2
// are set to nil as in ECImportanceInPlace.
func (ls *LayerStats) NoCompImportanceInPlace(n int) []float64 {
	ls.mustHaveSums("NoCompImportanceInPlace")
	imp := ls.S2
	ls.noCompInto(n, imp)
	ls.S1, ls.S2 = nil, nil
	return imp
}

// ScoreConsuming is c.Score(st, seed) for a caller that will not use st's
// S1 and S2 again (nor score another criterion from st): the criteria
// with an in-place form (ec, ec-nocomp) compute their scores in the
// storage of S1 and S2, one layer at a time, and leave them nil. Other
// criteria do not need that storage and score as Score does; st is then
// left as it was.
func ScoreConsuming(c Criterion, st *Stats, seed uint64) (*Scores, error) {
	fc, ok := c.(funcCriterion)
	if !ok || fc.inPlace == nil {
		return c.Score(st, seed)
	}
	out := &Scores{Method: fc.name}
	for _, ls := range st.Layers {
		ls.mustHaveSums("ScoreConsuming")
	}
	for _, ls := range st.Layers {
		s := &LayerScores{Layer: ls.Layer}
		s.Score, s.Delta = fc.inPlace(ls, st.N)
		out.Layers = append(out.Layers, s)
	}
	out.Local = localScores(fc.name, st)
	return out, nil
}
