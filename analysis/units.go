package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/ecprune/ecprune/onnxio"
)

// Structured pruning removes hidden units: unit j of a group is output j of
// a producer dense layer, carried through per-unit ops (activations,
// BatchNormalization, PRelu, bias-like Adds) to input j of one consumer
// dense layer. Removing it replaces its value a_j(n) at the consumer's
// input by a constant c_j, which the consumer's bias absorbs
// (b_i += W_next[i, j] c_j); the producer's row j, the per-unit parameters
// and the consumer's column j then go. METHOD.md ("Structured pruning")
// derives the importance.

// UnitGroup is the hidden units between a producer and a consumer dense
// layer, or, when Reason is set, why a layer's output units cannot be
// removed.
type UnitGroup struct {
	Producer *onnxio.Layer
	Consumer *onnxio.Layer // nil when not removable
	ProdOp   int           // index in Network.Ops of the producer's Dense op
	ConsOp   int           // of the consumer's Dense op, -1 when not removable
	// Value is the consumer's input value: the units' a_j(n), the value
	// a removed unit's constant replaces.
	Value int
	// Path are the per-unit ops between the two layers, in op order.
	Path   []int
	Units  int    // the producer's Out (= the consumer's In)
	Reason string // why the units are not removable ("" when they are)
	// Heads, for an attention block, says how the consumer's input units
	// form heads (removed Units/Heads at a time) and where they come
	// from; Producer is then the first q/k/v projection and Path empty.
	Heads *HeadInfo
	// Cost is the multiply-adds per sample that removing one block (a
	// unit, or a head) saves, set by SetUnitCosts; 0 when not measured,
	// and the selection then counts units instead.
	Cost float64
}

// Removable reports whether the group's units can be removed.
func (g *UnitGroup) Removable() bool { return g.Reason == "" }

// Name is the producer's name: units are named by the layer that makes
// them.
func (g *UnitGroup) Name() string { return g.Producer.Name }

// unaryPerUnit are the ops that act on each element alone, so that unit j
// of their output depends on unit j of their input only.
var unaryPerUnit = map[onnxio.OpKind]bool{
	onnxio.OpIdentity: true, onnxio.OpCast: true, onnxio.OpRelu: true, onnxio.OpLeakyRelu: true,
	onnxio.OpTanh: true, onnxio.OpSigmoid: true, onnxio.OpHardSigmoid: true, onnxio.OpHardSwish: true,
	onnxio.OpElu: true, onnxio.OpSelu: true, onnxio.OpSoftplus: true, onnxio.OpGelu: true, onnxio.OpErf: true,
}

// perUnitConst tells whether a constant operand acts per unit on a value
// whose last axis holds h units: a scalar, or a vector along the last
// axis (leading dims 1), which is sliced with the units.
func perUnitConst(c *onnxio.Const, h int) bool {
	if c == nil {
		return false
	}
	if len(c.Data) == 1 {
		return true
	}
	if len(c.Shape) == 0 || c.Shape[len(c.Shape)-1] != h || len(c.Data) != h {
		return false
	}
	return true
}

// UnitGroups finds, for every dense layer, whether its output units can
// be removed: the per-unit region its output flows through must end at
// exactly one dense layer's input and nowhere else (no graph output, no
// residual Add, no op that mixes units). The result is in layer order;
// groups with a Reason are not removable and say why.
func UnitGroups(net *onnxio.Network) []*UnitGroup {
	readers := make([][]int, len(net.Values))
	for i := range net.Ops {
		for _, v := range net.Ops[i].In {
			if v >= 0 && !slices.Contains(readers[v], i) {
				readers[v] = append(readers[v], i)
			}
		}
	}
	isOut := make([]bool, len(net.Values))
	for _, v := range net.Outputs {
		isOut[v] = true
	}
	var out []*UnitGroup
	for i := range net.Ops {
		op := &net.Ops[i]
		if op.Kind != onnxio.OpDense {
			continue
		}
		g := &UnitGroup{Producer: op.Layer, ProdOp: i, ConsOp: -1, Value: -1, Units: op.Layer.Out}
		g.Reason = unitRegion(net, g, readers, isOut)
		if g.Reason != "" {
			g.Consumer, g.ConsOp, g.Value, g.Path = nil, -1, -1, nil
		}
		out = append(out, g)
	}
	return out
}

// unitRegion walks the per-unit region from the producer's output and
// fills g's consumer and path, returning why the units are not removable.
func unitRegion(net *onnxio.Network, g *UnitGroup, readers [][]int, isOut []bool) string {
	if !net.Evaluable {
		return "the network cannot be evaluated: " + net.Reason
	}
	h := g.Units
	if h < 2 {
		return "the layer has one output unit, and a layer is never removed whole"
	}
	if !g.Producer.Prunable {
		return "the layer cannot be rewritten: " + g.Producer.Reason
	}
	if g.Producer.Tie != nil {
		return "the layer's weight " + g.Producer.Tie.Init + " is tied to other readers, which would lose the units too"
	}
	// Ops are in topological order: visiting the ops that read the
	// region in increasing index order sees every input of an op that
	// joins two branches of the region (GELU's x * Phi(x)) before the op
	// itself. Only the region's readers are visited (a min-heap of op
	// indices), so the walk costs its region, not the rest of the graph.
	first := net.Ops[g.ProdOp].Out
	region := map[int]bool{first: true}
	var next opQueue
	next.push(readers[first]...)
	for next.Len() > 0 {
		r := next.pop()
		op := &net.Ops[r]
		v := op.In[0]
		switch {
		case op.Kind == onnxio.OpDense:
			if !region[v] || op.Layer.In != h {
				return fmt.Sprintf("dense layer %s reads them in another shape", op.Layer.Name)
			}
			if g.ConsOp >= 0 {
				return fmt.Sprintf("they feed two dense layers (%s and %s)", g.Consumer.Name, op.Layer.Name)
			}
			if !op.Layer.Prunable {
				return fmt.Sprintf("the next dense layer %s cannot be rewritten: %s", op.Layer.Name, op.Layer.Reason)
			}
			if op.Layer.Tie != nil {
				return fmt.Sprintf("the next dense layer %s has a tied weight, which its other readers share", op.Layer.Name)
			}
			g.Consumer, g.ConsOp, g.Value = op.Layer, r, v
			continue
		case unaryPerUnit[op.Kind]:
		case op.Kind == onnxio.OpPRelu:
			if !perUnitConst(op.Const, h) {
				return fmt.Sprintf("%s (node %s) has a slope that is not per unit", op, op.Node)
			}
		case op.Kind == onnxio.OpBatchNorm:
			// Per channel on axis 1: the units' axis only for [N, units]
			// values, which CollectUnits checks on the trace.
			if len(op.Scale) != h {
				return fmt.Sprintf("%s (node %s) normalises another axis", op, op.Node)
			}
		case op.Kind == onnxio.OpAdd || op.Kind == onnxio.OpSub || op.Kind == onnxio.OpMul || op.Kind == onnxio.OpDiv:
			if len(op.In) == 1 {
				if !perUnitConst(op.Const, h) {
					return fmt.Sprintf("%s (node %s) has a constant that is not per unit", op, op.Node)
				}
				break
			}
			for _, in := range op.In {
				if !region[in] {
					return fmt.Sprintf("they are tied by %s (node %s) to another tensor (a residual connection: removable only together with every tensor it adds)", op, op.Node)
				}
			}
		default:
			return fmt.Sprintf("%s (node %s) mixes units", op, op.Node)
		}
		if g.ConsOp >= 0 {
			return "ops after the next dense layer read them"
		}
		g.Path = append(g.Path, r)
		region[op.Out] = true
		next.push(readers[op.Out]...)
	}
	for v := range region {
		if isOut[v] {
			return "its units reach a graph output"
		}
		if len(readers[v]) == 0 {
			return "its units are not read by any op"
		}
	}
	if g.ConsOp < 0 {
		return "no dense layer reads them"
	}
	if len(readers[g.Value]) != 1 {
		return fmt.Sprintf("the next dense layer's input %s is read by other ops too", net.Values[g.Value].Name)
	}
	return ""
}

// opQueue yields op indices in increasing order, each once.
type opQueue struct {
	h    []int
	seen map[int]bool
}

func (q *opQueue) Len() int { return len(q.h) }

func (q *opQueue) push(ops ...int) {
	for _, r := range ops {
		if q.seen[r] {
			continue
		}
		if q.seen == nil {
			q.seen = map[int]bool{}
		}
		q.seen[r] = true
		q.h = append(q.h, r)
		for i := len(q.h) - 1; i > 0; {
			p := (i - 1) / 2
			if q.h[p] <= q.h[i] {
				break
			}
			q.h[p], q.h[i] = q.h[i], q.h[p]
			i = p
		}
	}
}

func (q *opQueue) pop() int {
	top := q.h[0]
	last := len(q.h) - 1
	q.h[0] = q.h[last]
	q.h = q.h[:last]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < last && q.h[l] < q.h[m] {
			m = l
		}
		if l+1 < last && q.h[l+1] < q.h[m] {
			m = l + 1
		}
		if m == i {
			return top
		}
		q.h[i], q.h[m] = q.h[m], q.h[i]
		i = m
	}
}

// UnitGroupStats are the sums over calibration rows (samples, times
// positions for [N, T, C] values) of one removable group, with a_j the
// units' values at the consumer's input, c the shift (the first batch's
// means, for the same numerical reason as LayerStats.Shift) and v_j(n) =
// ||dy(n)/da_j(n)||^2 (or (dL_n/da_j(n))^2 for the loss objective).
type UnitGroupStats struct {
	Group *UnitGroup
	Shift []float64 // Units
	V0    []float64 // sum_n v_j(n)
	V1    []float64 // sum_n v_j(n) (a_j(n) - c_j)
	V2    []float64 // sum_n v_j(n) (a_j(n) - c_j)^2
	A1    []float64 // sum_n (a_j(n) - c_j)
	A2    []float64 // sum_n (a_j(n) - c_j)^2
	Rows  int       // rows summed (samples x positions)
	// With CollectUnitPairs, Units x Units sums over rows and output
	// directions p, with G = dy_p/da and D = G (a - c) elementwise:
	// PP = sum D^T D, PQ = sum D^T G, PR = sum G^T G (see Pairs).
	PP, PQ, PR []float64
	// seqFirst: the value's rows are position-major (row t*N + n, as in
	// sequence-first [T, N, C] attention), not sample-major.
	seqFirst bool
}

// UnitStats are the statistics of every removable group.
type UnitStats struct {
	Net    *onnxio.Network
	Groups []*UnitGroupStats
	N      int    // calibration samples
	Mode   string // reverse, probes(P), loss
}

// CollectUnits runs the network over the calibration data once and
// accumulates the unit statistics of the given groups (removable ones).
// Derivatives are reverse mode: one VJP direction per output component,
// P random-sign directions with opt.Probes, or the loss's cotangent.
func CollectUnits(net *onnxio.Network, groups []*UnitGroup, data Data, opt StatsOptions) (*UnitStats, error) {
	return collectUnits(net, groups, data, opt, false)
}

// CollectUnitPairs is CollectUnits that also accumulates the sums the
// interactions of removed units need (UnitGroupStats.Pairs): three
// Units x Units matrices per group, and about 3 x K x rows x Units^2
// multiply-adds more per batch.
func CollectUnitPairs(net *onnxio.Network, groups []*UnitGroup, data Data, opt StatsOptions) (*UnitStats, error) {
	return collectUnits(net, groups, data, opt, true)
}

func collectUnits(net *onnxio.Network, groups []*UnitGroup, data Data, opt StatsOptions, pairs bool) (*UnitStats, error) {
	if !net.Evaluable {
		return nil, fmt.Errorf("the network cannot be evaluated: %s", net.Reason)
	}
	if opt.Objective == "" {
		opt.Objective = ObjOutput
	}
	if opt.Objective == ObjLoss && opt.Labels == nil {
		return nil, fmt.Errorf("the %s objective needs labels", ObjLoss)
	}
	if opt.Batch <= 0 {
		opt.Batch = 256
	}
	st := &UnitStats{Net: net}
	var want []int
	for _, g := range groups {
		if !g.Removable() {
			return nil, fmt.Errorf("layer %s: units not removable: %s", g.Name(), g.Reason)
		}
		h := g.Units
		gs := &UnitGroupStats{Group: g,
			V0: make([]float64, h), V1: make([]float64, h), V2: make([]float64, h), A1: make([]float64, h), A2: make([]float64, h)}
		if pairs || g.Heads != nil {
			// A head's importance is the error of its units removed
			// together: the sum of their block of the pair matrix.
			gs.PP, gs.PQ, gs.PR = make([]float64, h*h), make([]float64, h*h), make([]float64, h*h)
		}
		st.Groups = append(st.Groups, gs)
		want = append(want, g.Value)
	}
	if len(st.Groups) == 0 {
		return nil, fmt.Errorf("no removable units")
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0x5851f42d4c957f2d))
	err := data.Each(opt.Batch, func(b Batch) error {
		n := b.Inputs[0].Shape[0]
		tr, err := Run(net, b.Inputs)
		if err != nil {
			return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
		}
		if b.Start == 0 {
			if err := detectRowOrder(net, b.Inputs, st.Groups); err != nil {
				return err
			}
		}
		for _, gs := range st.Groups {
			for _, k := range gs.Group.Path {
				if net.Ops[k].Kind == onnxio.OpBatchNorm && tr.Values[net.Ops[k].In[0]].Rank() != 2 {
					return fmt.Errorf("layer %s: BatchNormalization (node %s) normalises axis 1 of a rank-%d tensor, not the units' axis",
						gs.Group.Name(), net.Ops[k].Node, tr.Values[net.Ops[k].In[0]].Rank())
				}
			}
		}
		v := make([][]float64, len(want))
		for i, w := range want {
			v[i] = make([]float64, tr.Values[w].Len())
		}
		mode, err := unitCotangents(net, tr, want, opt, b.Start, n, rng, func(res map[int]*Tensor, scale float64) {
			for i, w := range want {
				gs := st.Groups[i]
				if positions(tr.Values[w], n, gs.Group.Units) > 1 {
					gs.addSampleSums(tr.Values[w].Data, res[w], scale, n)
					continue
				}
				addSquares(v[i], res[w], scale)
				if gs.PP != nil {
					gs.addPairs(tr.Values[w].Data, res[w], scale)
				}
			}
		})
		if err != nil {
			return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
		}
		if st.Mode == "" {
			st.Mode = mode
			if opt.Log != nil {
				opt.Log("analysis: %d unit groups, derivatives by %s", len(st.Groups), mode)
			}
		}
		for gi, gs := range st.Groups {
			a := tr.Values[gs.Group.Value]
			if positions(a, n, gs.Group.Units) > 1 {
				gs.accumulate(a.Data, nil) // the derivative sums are per sample
				continue
			}
			gs.accumulate(a.Data, v[gi])
		}
		st.N += n
		if opt.Progress != nil {
			opt.Progress(st.N, data.Len())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.N == 0 {
		return nil, fmt.Errorf("no calibration samples")
	}
	return st, nil
}

// accumulate adds a batch's activation sums, and with v (the summed
// squared cotangents of each element) the derivative sums of values with
// one row per sample.
func (gs *UnitGroupStats) accumulate(a, v []float64) {
	h := gs.Group.Units
	if gs.Shift == nil {
		gs.Shift = ColumnMeans(a, h)
	}
	for r := 0; r < len(a)/h; r++ {
		row := a[r*h : (r+1)*h]
		for j, x := range row {
			d := x - gs.Shift[j]
			gs.A1[j] += d
			gs.A2[j] += d * d
			if v != nil {
				vr := v[r*h : (r+1)*h]
				gs.V0[j] += vr[j]
				gs.V1[j] += vr[j] * d
				gs.V2[j] += vr[j] * d * d
			}
		}
		gs.Rows++
	}
}

// detectRowOrder finds, for groups whose values have several rows per
// sample, whether the rows are sample-major or position-major: the first
// two samples are run as they are and with the second replaced by the
// first, and the rows that change are the second sample's.
func detectRowOrder(net *onnxio.Network, inputs []*Tensor, groups []*UnitGroupStats) error {
	if len(inputs) == 0 || inputs[0].Shape[0] < 2 {
		return nil
	}
	two := make([]*Tensor, len(inputs))
	same := make([]*Tensor, len(inputs))
	for i, x := range inputs {
		two[i] = x.Batch(0, 2).Clone()
		same[i] = two[i].Clone()
		per := same[i].Len() / 2
		copy(same[i].Data[per:], same[i].Data[:per])
	}
	var tr2, tr1 *Trace
	for _, gs := range groups {
		h := gs.Group.Units
		if tr2 == nil {
			var err error
			if tr2, err = Run(net, two); err != nil {
				return fmt.Errorf("probing the row order: %w", err)
			}
			if tr1, err = Run(net, same); err != nil {
				return fmt.Errorf("probing the row order: %w", err)
			}
		}
		a2, a1 := tr2.Values[gs.Group.Value].Data, tr1.Values[gs.Group.Value].Data
		rows := len(a2) / h
		if rows <= 2 || rows%2 != 0 {
			continue
		}
		// Which rows differ: sample-major puts sample 1 in the second half,
		// position-major in the odd rows.
		sm, pm := true, true
		for r := 0; r < rows; r++ {
			differs := !slices.Equal(a2[r*h:(r+1)*h], a1[r*h:(r+1)*h])
			if differs && r < rows/2 {
				sm = false
			}
			if differs && r%2 == 0 {
				pm = false
			}
		}
		gs.seqFirst = pm && !sm
	}
	return nil
}

// positions is how many rows of units a sample has in value a ([N, T,
// units] values have T).
func positions(a *Tensor, n, units int) int { return a.Len() / (n * units) }

// addSampleSums adds one chunk of directions for a value with several
// positions (rows) per sample. A removed unit moves at every position of
// a sample at once, so its first-order output change in direction p is
// sum over the sample's rows r of g_p(r) (c + delta - a(r)), g = dy_p/da:
// the sums G1 = sum_r g and GA = sum_r g (a - c) per sample and direction
// replace the per-row g and g (a - c) of one-row values in V0, V1, V2 (and
// in the pair sums), which makes the importance exact to first order
// where per-row sums would drop the cross-position terms.
func (gs *UnitGroupStats) addSampleSums(a []float64, cot *Tensor, scale float64, n int) {
	h := gs.Group.Units
	if gs.Shift == nil {
		gs.Shift = ColumnMeans(a, h)
	}
	per := len(a) / n
	sq := math.Sqrt(scale)
	g1 := make([]float64, n*h)
	ga := make([]float64, n*h)
	for p := 0; p < cot.Len()/len(a); p++ {
		clear(g1)
		clear(ga)
		for q, x := range cot.Data[p*len(a) : (p+1)*len(a)] {
			if x == 0 {
				continue
			}
			k := (q/per)*h + q%h
			if gs.seqFirst {
				k = ((q/h)%n)*h + q%h
			}
			g := sq * x
			g1[k] += g
			ga[k] += g * (a[q] - gs.Shift[q%h])
		}
		for k := range g1 {
			j := k % h
			gs.V0[j] += g1[k] * g1[k]
			gs.V1[j] += ga[k] * g1[k]
			gs.V2[j] += ga[k] * ga[k]
		}
		if gs.PP != nil {
			matmul(true, false, h, h, n, ga, ga, gs.PP, 1)
			matmul(true, false, h, h, n, ga, g1, gs.PQ, 1)
			matmul(true, false, h, h, n, g1, g1, gs.PR, 1)
		}
	}
}

// unitCotangents pulls the output directions back to the wanted values
// and hands each chunk to f: res[w] is [P, ...value shape], the
// cotangents dy_p/da of P directions, and scale weighs their squares (1
// for exact directions, 1/probes for random signs). It returns how the
// derivatives were taken.
func unitCotangents(net *onnxio.Network, tr *Trace, want []int, opt StatsOptions, start, n int, rng *rand.Rand,
	f func(res map[int]*Tensor, scale float64)) (string, error) {
	outs := tr.Outputs()
	add := func(cot []*Tensor, scale float64) error {
		res, err := VJP(net, tr, cot, want)
		if err != nil {
			return err
		}
		f(res, scale)
		return nil
	}
	if opt.Objective == ObjLoss {
		cot, err := lossCotangentAtOutput(net, tr, opt, start, n)
		if err != nil {
			return "", err
		}
		return "loss", add(cot, 1)
	}
	k := outputSize(outs, n)
	probes := opt.Probes > 0 && k > opt.Probes
	dirs, mode := k, ADReverse
	if probes {
		dirs, mode = opt.Probes, fmt.Sprintf("probes(%d)", opt.Probes)
	}
	maxT := opt.MaxTangent
	if maxT <= 0 {
		maxT = 1 << 24
	}
	chunk := max(1, maxT/max(1, n*maxWidth(tr)))
	for p0 := 0; p0 < dirs; p0 += chunk {
		p1 := min(dirs, p0+chunk)
		cot := make([]*Tensor, len(outs))
		for o, out := range outs {
			cot[o] = Zeros(append([]int{p1 - p0}, out.Shape...)...)
		}
		if probes {
			for _, c := range cot {
				for q := range c.Data {
					c.Data[q] = float64(1 - 2*int(rng.Uint64()&1))
				}
			}
		} else {
			// Direction p is output component p (outputs concatenated).
			for p := p0; p < p1; p++ {
				o, kk := p, 0
				for ; o >= outs[kk].Len()/n; kk++ {
					o -= outs[kk].Len() / n
				}
				per := outs[kk].Len() / n
				for s := 0; s < n; s++ {
					cot[kk].Data[(p-p0)*outs[kk].Len()+s*per+o] = 1
				}
			}
		}
		scale := 1.0
		if probes {
			scale = 1 / float64(dirs)
		}
		if err := add(cot, scale); err != nil {
			return "", err
		}
	}
	return mode, nil
}

// Unit criteria, by name. "ec" is the elimination-compensation importance
// of a unit (METHOD.md, "Structured pruning"); the others are baselines.
var unitMethods = []string{"ec", "ec-nocomp", "magnitude", "wanda", "random"}

// UnitMethods lists the unit criteria.
func UnitMethods() []string { return append([]string(nil), unitMethods...) }

// UnitCompensates tells whether a unit criterion replaces a removed unit
// by a constant the consumer's bias absorbs (otherwise the unit is dropped,
// which is the same as replacing it by 0).
func UnitCompensates(method string) bool { return method == "ec" }

// UnitScores are one score per unit of each group (lower: removed first)
// and the constant c_j that replaces unit j when it is removed.
type UnitScores struct {
	Method string
	Groups []*UnitGroupScores
}

// UnitGroupScores are the scores of one group.
type UnitGroupScores struct {
	Group *UnitGroup
	Score []float64 // Units
	Const []float64 // Units: the value a removed unit is replaced by
	// Block, for head groups, is the score of each head (its units
	// removed together), on the scale of Score summed over the head's
	// units; nil for other groups.
	Block []float64
}

// ScoreUnits scores every unit of the statistics' groups with a unit
// criterion. compensate says whether removed units are replaced by their
// calibration means rather than by 0 (UnitGroupScores.Const); ec's
// importance assumes it.
func ScoreUnits(st *UnitStats, method string, compensate bool, seed uint64) (*UnitScores, error) {
	if !slices.Contains(unitMethods, method) {
		return nil, fmt.Errorf("unknown unit method %q (want one of %s)", method, plain.Choices(unitMethods))
	}
	sc := &UnitScores{Method: method}
	rng := rand.New(rand.NewPCG(seed, 0xda3e39cb94b95bdb))
	for _, gs := range st.Groups {
		g := gs.Group
		h := g.Units
		rows := float64(gs.Rows)
		// Importances are per sample (METHOD.md's 1/N), summing a sample's
		// positions, like the weight-level ones.
		n := float64(st.N)
		s := &UnitGroupScores{Group: g, Score: make([]float64, h), Const: make([]float64, h)}
		var rowNorm []float64
		if method == "magnitude" || method == "wanda" {
			rowNorm = make([]float64, h)
			l := g.Producer
			for j := 0; j < h; j++ {
				var ss float64
				for q := j * l.In; q < (j+1)*l.In; q++ {
					w := l.At(q)
					ss += w * w
				}
				rowNorm[j] = math.Sqrt(ss)
			}
		}
		for j := 0; j < h; j++ {
			mean := gs.A1[j] / rows // relative to Shift
			if compensate {
				s.Const[j] = gs.Shift[j] + mean
			}
			switch method {
			case "ec":
				// The unit replaced by its calibration mean: the importance
				// is the v-weighted spread around it. (The v-weighted mean
				// would minimise the one-unit first-order error, but
				// measured on MNIST the plain mean does better once many
				// units go, and it needs no derivatives to stay valid.)
				s.Score[j] = math.Max(0, gs.V2[j]-2*mean*gs.V1[j]+mean*mean*gs.V0[j]) / n
			case "ec-nocomp":
				// a_j(n) replaced by 0: (1/N) sum v a^2, a = d + Shift.
				c := gs.Shift[j]
				s.Score[j] = math.Max(0, gs.V2[j]+2*c*gs.V1[j]+c*c*gs.V0[j]) / n
			case "magnitude":
				s.Score[j] = rowNorm[j]
			case "wanda":
				c := gs.Shift[j]
				s.Score[j] = rowNorm[j] * math.Sqrt(math.Max(0, gs.A2[j]+2*c*gs.A1[j]+c*c*rows))
			case "random":
				s.Score[j] = rng.Float64()
			}
		}
		if g.Heads != nil {
			s.Block = headScores(st, gs, method, rng)
		}
		sc.Groups = append(sc.Groups, s)
	}
	return sc, nil
}

// RunEdited evaluates the network on inputs with some values rewritten as
// they are computed: edit[v] gets a copy of value v's tensor and may
// change it before any op reads it. It is how a removed unit's constant
// is substituted into the original graph (the brute-force reference of
// the unit importance and of the exported smaller model).
func RunEdited(net *onnxio.Network, inputs []*Tensor, edit map[int]func(*Tensor)) (*Trace, error) {
	tr, err := Run(net, inputs)
	if err != nil {
		return nil, err
	}
	// Each edited value is rewritten right after the op producing it (or
	// before every op for a graph input), in op order.
	start := map[int]int{}
	for v := range edit {
		start[v] = 0
	}
	for i := range net.Ops {
		if _, ok := start[net.Ops[i].Out]; ok {
			start[net.Ops[i].Out] = i + 1
		}
	}
	vs := make([]int, 0, len(edit))
	for v := range edit {
		vs = append(vs, v)
	}
	slices.SortFunc(vs, func(a, b int) int { return start[a] - start[b] })
	for _, v := range vs {
		if tr, err = RunFrom(net, tr, len(net.Ops)); err != nil { // a copy
			return nil, err
		}
		t := tr.Values[v].Clone()
		edit[v](t)
		tr.Values[v] = t
		if tr, err = RunFrom(net, tr, start[v]); err != nil {
			return nil, err
		}
	}
	return tr, nil
}

// addPairs adds one chunk of directions to PP, PQ and PR. a is the value
// ([rows, Units]), cot its cotangents [P, rows, Units].
func (gs *UnitGroupStats) addPairs(a []float64, cot *Tensor, scale float64) {
	h := gs.Group.Units
	if gs.Shift == nil {
		gs.Shift = ColumnMeans(a, h)
	}
	rows := len(a) / h
	g := make([]float64, len(a))
	d := make([]float64, len(a))
	sq := math.Sqrt(scale)
	for p := 0; p < cot.Len()/len(a); p++ {
		for q, x := range cot.Data[p*len(a) : (p+1)*len(a)] {
			g[q] = sq * x
			d[q] = g[q] * (a[q] - gs.Shift[q%h])
		}
		matmul(true, false, h, h, rows, d, d, gs.PP, 1)
		matmul(true, false, h, h, rows, d, g, gs.PQ, 1)
		matmul(true, false, h, h, rows, g, g, gs.PR, 1)
	}
}

// Pairs is the matrix M of the first-order output error of removing a set
// R of the group's units, each replaced by its calibration mean m:
// (1/N) sum_n ||sum_{j in R} dy/da_j(n) (m_j - a_j(n))||^2 = sum_{j,k in R}
// M_jk. Its diagonal is the ec importance; the rest are the interactions
// one-unit importances leave out (units whose errors add up coherently).
// nil without CollectUnitPairs.
func (gs *UnitGroupStats) Pairs(n int) []float64 {
	if gs.PP == nil {
		return nil
	}
	h := gs.Group.Units
	delta := make([]float64, h)
	for j := range delta {
		delta[j] = gs.A1[j] / float64(gs.Rows)
	}
	return gs.pairsAround(n, delta)
}

// pairsAround is Pairs with unit j replaced by c_j + delta_j (c the
// shift) instead of its mean.
func (gs *UnitGroupStats) pairsAround(n int, delta []float64) []float64 {
	h := gs.Group.Units
	// D(a - m) = D(a - c) - G diag(delta), delta = m - c.
	m := make([]float64, h*h)
	for j := 0; j < h; j++ {
		for k := 0; k < h; k++ {
			m[j*h+k] = (gs.PP[j*h+k] - gs.PQ[j*h+k]*delta[k] - gs.PQ[k*h+j]*delta[j] + delta[j]*gs.PR[j*h+k]*delta[k]) / float64(n)
		}
	}
	return m
}
