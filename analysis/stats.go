package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ecprune/ecprune/onnxio"
)

// Objective is what a weight's removal is measured on.
type Objective string

const (
	// ObjOutput: the model's outputs, J_i(n) = dy(n)/dz_i (no labels).
	ObjOutput Objective = "output"
	// ObjLoss: the per-sample loss, J_i(n) = dL_n/dz_i (needs labels).
	ObjLoss Objective = "loss"
)

// Task says which loss labels imply.
type Task string

const (
	TaskClassification Task = "classification" // cross-entropy on logits
	TaskRegression     Task = "regression"     // squared error
)

// AD modes. Forward seeds one tangent per neuron of a layer; reverse seeds
// one cotangent per output component; probes seeds P random-sign
// cotangents and estimates g without bias.
const (
	ADAuto    = "auto"
	ADForward = "forward"
	ADReverse = "reverse"
)

// DerivKind is how Collect computes g.
type DerivKind string

const (
	DerivForward DerivKind = ADForward // exact, one tangent per neuron
	DerivReverse DerivKind = ADReverse // exact, one cotangent per output
	DerivProbes  DerivKind = "probes"  // unbiased estimate from random-sign cotangents
	DerivLoss    DerivKind = "loss"    // the loss objective: g = (dL/dz)^2
)

// Derivatives says how g was computed: the kind and, for DerivProbes, the
// number of probes. The zero value means not chosen yet. Its text form
// (String, and in JSON) is "forward", "reverse", "probes(P)" or "loss".
type Derivatives struct {
	Kind   DerivKind
	Probes int
}

// String is the text form, for logs and reports.
func (d Derivatives) String() string {
	if d.Kind == DerivProbes {
		return fmt.Sprintf("probes(%d)", d.Probes)
	}
	return string(d.Kind)
}

// MarshalText writes the text form, so reports carry the familiar string.
func (d Derivatives) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Exact reports whether g is exact output-objective g (forward or reverse
// mode), not a probe estimate or the loss objective's.
func (d Derivatives) Exact() bool { return d.Kind == DerivForward || d.Kind == DerivReverse }

// Labels are the targets of the calibration samples, by sample index.
type Labels struct {
	Class  []int     // class indices, or nil
	Target []float64 // regression targets, row-major [N, width], or nil
	Width  int       // targets per sample
}

// Batch is a slice of calibration samples: one tensor per graph input with
// the batch as the first axis.
type Batch struct {
	Start  int
	Inputs []*Tensor
}

// Data streams calibration batches. Each may be called several times;
// batches come in order and cover every sample once.
type Data interface {
	Len() int
	Each(batch int, f func(b Batch) error) error
}

// StatsOptions tunes Collect.
type StatsOptions struct {
	Objective Objective
	Task      Task
	Labels    *Labels
	AD        string // ADAuto, ADForward, ADReverse
	Probes    int    // > 0: estimate g with this many random-sign VJPs when K > Probes
	Seed      uint64
	Batch     int
	// Grad also accumulates sum_n dL_n/dW (for gradient and taylor);
	// needs Labels.
	Grad bool
	// MaxTangent bounds the number of float64s in one batch of tangents
	// (P x batch x width), to bound memory; 0 means 1<<24.
	MaxTangent int
	Log        func(format string, args ...any)
	Progress   func(done, total int)
	// Observe, if set, sees every batch's trace and g (one [rows, Out]
	// slice per entry of Stats.Layers) before they are summed, so that a
	// method needing per-sample values of the original network (ec+) can
	// keep them instead of running a pass of its own. It must not modify
	// them.
	Observe func(st *Stats, b Batch, tr *Trace, g [][]float64) error
}

// LayerStats are the sums METHOD.md defines for one prunable layer, over
// the calibration samples. S1 and S2 are accumulated on activations
// shifted by Shift (the first batch's feature means), which keeps the
// weighted variance S2 - S1^2/S0 free of cancellation: a feature constant
// over the calibration set gets exactly 0.
type LayerStats struct {
	Layer *onnxio.Layer
	Op    int       // index of the layer's Dense op in Network.Ops
	Shift []float64 // In
	S0    []float64 // Out: sum_n g_i(n)
	S1    []float64 // Out x In: sum_n g_i(n) (a_j(n) - Shift_j)
	S2    []float64 // Out x In: sum_n g_i(n) (a_j(n) - Shift_j)^2
	SumA2 []float64 // In: sum_n a_j(n)^2 (wanda)
	GradW []float64 // Out x In: sum_n dL_n/dW_ij, or nil
}

// Stats holds LayerStats for every prunable layer.
type Stats struct {
	Net       *onnxio.Network
	Layers    []*LayerStats
	N         int         // calibration samples
	Mode      Derivatives // how g was computed
	Objective Objective
	Passes    int // batches processed (to show statistics are computed once)
	// Gathers are the embedding uses of tied weights (see tie.go).
	Gathers []*GatherStats
	// Local are the layers analysed with their local objective (g = 1:
	// their own output's change), each with the reason: the ops without
	// a derivative on every path to the outputs (local.go).
	Local map[*onnxio.Layer]string

	rng *rand.Rand // probe signs, continuing across batches
	// w32 holds the layers' float32 weights (their own, or copies of
	// float64 ones) while probes are estimated (their products run in
	// float32; see weights32).
	w32 map[*onnxio.Layer][]float32
}

// weights32 returns the float32 weights of a layer (layerF32), once per
// Collect.
func (s *Stats) weights32(l *onnxio.Layer) []float32 {
	w, ok := s.w32[l]
	if !ok {
		w = layerF32(l)
		s.w32[l] = w
	}
	return w
}

// layerF32 is a layer's weights in float32: its own W32, or a new copy of
// W rounded to float32.
func layerF32(l *onnxio.Layer) []float32 {
	if l.W32 != nil {
		return l.W32
	}
	w := make([]float32, len(l.W))
	convertInto(w, l.W)
	return w
}

// GBatch computes g_i(row) = ||J_i(row)||^2 (or (dL/dz_i)^2 for the loss
// objective) of every prunable layer on one traced batch, the way Collect
// did: one []float64 [rows, Out] per entry of st.Layers. Methods that need
// per-sample weights (ec+) use it.
func GBatch(net *onnxio.Network, tr *Trace, st *Stats, opt StatsOptions, start, n int) ([][]float64, error) {
	if st.Mode.Kind == DerivLoss {
		dz, err := lossCotangents(net, tr, st, opt, start, n, false)
		if err != nil {
			return nil, err
		}
		g := make([][]float64, len(dz))
		for i, d := range dz {
			g[i] = make([]float64, d.Len())
			addSquares(g[i], d, 1)
		}
		fillLocal(net, st, g)
		return g, nil
	}
	if opt.MaxTangent <= 0 {
		opt.MaxTangent = 1 << 24
	}
	if st.rng == nil {
		st.rng = rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15))
	}
	g, err := gValues(net, tr, st, opt, n, outputSize(tr.Outputs(), n), st.rng, false, nil)
	if err != nil {
		return nil, err
	}
	fillLocal(net, st, g)
	return g, nil
}

// LayerStatsFor finds the statistics of a layer.
func (s *Stats) LayerStatsFor(l *onnxio.Layer) *LayerStats {
	for _, ls := range s.Layers {
		if ls.Layer == l {
			return ls
		}
	}
	return nil
}

// OutputSize is K, the number of output values per sample (all graph
// outputs concatenated), from a trace of a batch of n samples.
func outputSize(outs []*Tensor, n int) int {
	k := 0
	for _, o := range outs {
		k += o.Len() / n
	}
	return k
}

// chooseMode picks the cheaper exact path: forward costs about the sum of
// out_l (times positions) tangent passes, reverse about K.
func chooseMode(opt StatsOptions, layers []*LayerStats, rowsPerSample []int, k int) Derivatives {
	if opt.Objective == ObjLoss {
		return Derivatives{Kind: DerivLoss}
	}
	if opt.AD == ADForward {
		return Derivatives{Kind: DerivForward}
	}
	if opt.Probes > 0 && k > opt.Probes && opt.AD != ADReverse {
		return Derivatives{Kind: DerivProbes, Probes: opt.Probes}
	}
	if opt.AD == ADReverse {
		return Derivatives{Kind: DerivReverse}
	}
	fwd := 0
	for i, ls := range layers {
		fwd += ls.Layer.Out * rowsPerSample[i]
	}
	if fwd < k {
		return Derivatives{Kind: DerivForward}
	}
	return Derivatives{Kind: DerivReverse}
}

// Collect runs the network over the calibration data once and accumulates
// the statistics of every prunable layer.
func Collect(net *onnxio.Network, data Data, opt StatsOptions) (*Stats, error) {
	// Without Observe nothing keeps a batch's trace or derivatives past
	// the batch: its buffers can serve the next one.
	return collect(net, data, opt, opt.Observe == nil)
}

// collect is Collect, recycling the buffers of each batch for the next
// (an arena) when reuse is set.
func collect(net *onnxio.Network, data Data, opt StatsOptions, reuse bool) (*Stats, error) {
	if !net.Evaluable {
		return nil, fmt.Errorf("the network cannot be evaluated: %s", net.Reason)
	}
	if opt.Objective == "" {
		opt.Objective = ObjOutput
	}
	if (opt.Objective == ObjLoss || opt.Grad) && opt.Labels == nil {
		return nil, fmt.Errorf("the %s objective needs labels", ObjLoss)
	}
	if opt.Batch <= 0 {
		opt.Batch = 256
	}
	if opt.MaxTangent <= 0 {
		opt.MaxTangent = 1 << 24
	}
	logf := opt.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	st := &Stats{Net: net, Objective: opt.Objective}
	for i, op := range net.Ops {
		if op.Kind == onnxio.OpDense && op.Layer.Prunable {
			l := op.Layer
			st.Layers = append(st.Layers, &LayerStats{
				Layer: l, Op: i,
				S0: make([]float64, l.Out), S1: make([]float64, l.Out*l.In), S2: make([]float64, l.Out*l.In),
				SumA2: make([]float64, l.In),
			})
			if opt.Grad {
				st.Layers[len(st.Layers)-1].GradW = make([]float64, l.Out*l.In)
			}
		}
	}
	if len(st.Layers) == 0 {
		return nil, fmt.Errorf("no prunable layers")
	}
	st.Gathers = gatherStats(net)
	logLocal(st.local(net), logf)
	st.rng = rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15))
	var inPlace []bool
	if opt.Observe == nil {
		// Nobody reads the pre-activations of Dense+Relu pairs: the trace
		// keeps one tensor for both (a batch of a 4096-wide MLP: 8 MB less
		// per layer).
		inPlace = reluInPlaceValues(net)
	}
	var ar *arena
	if reuse && opt.Observe == nil {
		ar = &arena{}
		defer ar.close() // after the last batch: nothing of it is referenced
	}
	total := data.Len()
	done := 0
	err := data.Each(opt.Batch, func(b Batch) error {
		n := b.Inputs[0].Shape[0]
		var w32 func(*onnxio.Layer) []float32
		if st.w32 != nil {
			w32 = st.weights32 // probes: float32 forward pass
		}
		if ar != nil {
			defer ar.reset() // the batch's trace and cotangents are dead on return
		}
		tr, err := runTrace(net, b.Inputs, w32, inPlace, ar)
		if err != nil {
			return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
		}
		outs := tr.Outputs()
		k := outputSize(outs, n)
		rowsPer := make([]int, len(st.Layers))
		for i, ls := range st.Layers {
			r, _ := Flat(tr.Values[net.Ops[ls.Op].Out])
			rowsPer[i] = r / n
		}
		if st.Mode.Kind == "" {
			st.Mode = chooseMode(opt, st.Layers, rowsPer, k)
			if st.Mode.Kind == DerivProbes {
				st.w32 = map[*onnxio.Layer][]float32{}
				tr.w32 = st.weights32 // for this batch's reverse pass
			}
			logf("analysis: %d layers, K=%d outputs per sample, derivatives by %s", len(st.Layers), k, st.Mode)
		}
		var dz []*Tensor
		if opt.Grad || st.Mode.Kind == DerivLoss {
			dz, err = lossCotangents(net, tr, st, opt, b.Start, n, true)
			if err != nil {
				return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
			}
		}
		var g [][]float64
		if st.Mode.Kind == DerivLoss {
			// J_i(n) = dL_n/dz_i, a scalar: g is its square.
			g = make([][]float64, len(dz))
			for i, d := range dz {
				g[i] = make([]float64, d.Len())
				addSquares(g[i], d, 1)
			}
		} else if g, err = gValues(net, tr, st, opt, n, k, st.rng, true, ar); err != nil {
			return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
		}
		fillLocal(net, st, g)
		if !opt.Grad {
			dz = nil
		}
		if opt.Observe != nil {
			if err := opt.Observe(st, b, tr, g); err != nil {
				return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
			}
		}
		for i, ls := range st.Layers {
			a := tr.Values[net.Ops[ls.Op].In[0]]
			var gz []float64
			if dz != nil {
				gz = dz[i].Data
			}
			ls.accumulate(a.Data, g[i], gz, st.Mode.Kind == DerivProbes, ar)
		}
		for k, gs := range st.Gathers {
			gs.accumulate(tr, g[len(st.Layers)+k])
		}
		st.N += n
		st.Passes++
		done += n
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.N == 0 {
		return nil, fmt.Errorf("no calibration samples")
	}
	st.w32 = nil // let the GC have the float32 copies
	return st, nil
}

// ColumnMeans is the mean of each column of a row-major matrix a with
// cols columns (zeros for no rows): the per-feature shift that keeps the
// weighted variances S2 - S1^2/S0 free of cancellation.
func ColumnMeans(a []float64, cols int) []float64 {
	rows := len(a) / cols
	m := make([]float64, cols)
	for r := 0; r < rows; r++ {
		for j, v := range a[r*cols : (r+1)*cols] {
			m[j] += v
		}
	}
	for j := range m {
		m[j] /= float64(max(rows, 1))
	}
	return m
}

// accumulate adds one batch: a is the layer input [rows, In], g the
// weights g_i [rows, Out], dz (optional) dL/dz [rows, Out]. f32 does the
// batch's S1/S2 products in float32 (probe estimates); the sums over
// batches stay float64. The float64 scratch comes from ar (nil: the Go
// heap).
func (ls *LayerStats) accumulate(a, g, dz []float64, f32 bool, ar *arena) {
	l := ls.Layer
	rows := len(a) / l.In
	if ls.Shift == nil {
		ls.Shift = ColumnMeans(a, l.In)
	}
	for r := 0; r < rows; r++ {
		for j, v := range a[r*l.In : (r+1)*l.In] {
			ls.SumA2[j] += v * v
		}
		for i, gv := range g[r*l.Out : (r+1)*l.Out] {
			ls.S0[i] += gv
		}
	}
	// S1 += g^T ac, S2 += g^T ac2: [Out, rows] x [rows, In], with ac the
	// shifted activations and ac2 their squares.
	if f32 {
		// The operands are made in float32 directly (the same values
		// matmul32 would round them to), without float64 copies.
		ac, ac2, g32 := getBuf[float32](len(a)), getBuf[float32](len(a)), getBuf[float32](len(g))
		defer putBuf(ac)
		defer putBuf(ac2)
		defer putBuf(g32)
		shiftedInto(*ac, *ac2, a, ls.Shift)
		convertInto(*g32, g)
		ta, ar, acols, tb, br, bc := blasShapes(true, false, l.Out, l.In, rows)
		gemm32Into(ta, ar, acols, *g32, tb, br, bc, *ac, l.Out, l.In, 1, ls.S1, 1)
		gemm32Into(ta, ar, acols, *g32, tb, br, bc, *ac2, l.Out, l.In, 1, ls.S2, 1)
	} else {
		ac, ac2 := ar.zerosOrFresh(len(a)), ar.zerosOrFresh(len(a))
		defer ar.release(ac)
		defer ar.release(ac2)
		shiftedInto(ac, ac2, a, ls.Shift)
		matmul(true, false, l.Out, l.In, rows, g, ac, ls.S1, 1)
		matmul(true, false, l.Out, l.In, rows, g, ac2, ls.S2, 1)
	}
	if dz != nil {
		matmul(true, false, l.Out, l.In, rows, dz, a, ls.GradW, 1)
	}
}

// shiftedInto sets ac to the rows of a (width len(shift)) minus shift and
// ac2 to their squares, both computed in float64 and stored as T.
func shiftedInto[T float32 | float64](ac, ac2 []T, a, shift []float64) {
	in := len(shift)
	parallelAbove(len(a)/in, max(1, (1<<16)/in), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for j, v := range a[r*in : (r+1)*in] {
				d := v - shift[j]
				ac[r*in+j] = T(d)
				ac2[r*in+j] = T(d * d)
			}
		}
	})
}

// gValues computes g_i(row) = ||J_i(row)||^2 for every prunable layer, one
// []float64 [rows, Out] per layer, then, with gathers, for the output of
// every embedding use of a tied weight (st.Gathers). The g slices come
// from gArena (nil: the Go heap), for a caller that drops them with the
// batch.
func gValues(net *onnxio.Network, tr *Trace, st *Stats, opt StatsOptions, n, k int, rng *rand.Rand, gathers bool, gArena *arena) ([][]float64, error) {
	want := st.targets(net, gathers)
	g := make([][]float64, len(want))
	for i, id := range want {
		g[i] = gArena.zerosOrFresh(tr.Values[id].Len())
	}
	// Local layers get g = 1 from fillLocal: no derivatives for them.
	global, wantGlobal := globalLayers(st, st.local(net), want)
	for i := len(st.Layers); i < len(want); i++ {
		// The lookups of tied weights (st.Gathers) always take the
		// output-level g: a tie is selected as one tensor.
		global, wantGlobal = append(global, i), append(wantGlobal, want[i])
	}
	outs := tr.Outputs()
	switch {
	case len(global) == 0:
	case st.Mode.Kind == DerivForward:
		for _, i := range global {
			z := tr.Values[want[i]]
			posTotal := z.Len() / n // positions x Out per sample
			chunk := max(1, opt.MaxTangent/max(1, n*maxWidth(tr)))
			for p0 := 0; p0 < posTotal; p0 += chunk {
				p1 := min(posTotal, p0+chunk)
				seed := Zeros(append([]int{p1 - p0}, z.Shape...)...)
				per := z.Len() / n
				for p := p0; p < p1; p++ {
					for s := 0; s < n; s++ {
						seed.Data[(p-p0)*z.Len()+s*per+p] = 1
					}
				}
				tans, err := JVP(net, tr, want[i], seed)
				if err != nil {
					return nil, err
				}
				for p := p0; p < p1; p++ {
					for s := 0; s < n; s++ {
						var sum float64
						for o, t := range tans {
							per := outs[o].Len() / n
							for _, v := range t.Data[(p-p0)*outs[o].Len()+s*per : (p-p0)*outs[o].Len()+(s+1)*per] {
								sum += v * v
							}
						}
						g[i][s*per+p] += sum
					}
				}
			}
		}
	default: // reverse or probes
		probes := 0
		dirs := k
		if st.Mode.Kind != DerivReverse {
			probes = opt.Probes
			dirs = probes
		}
		chunk := max(1, opt.MaxTangent/max(1, n*maxWidth(tr)))
		for p0 := 0; p0 < dirs; p0 += chunk {
			p1 := min(dirs, p0+chunk)
			var signs [][]float32
			if probes > 0 {
				// Float32 end to end when the ops allow it.
				signs = make([][]float32, len(outs))
				for o, out := range outs {
					c := *getBuf[float32]((p1 - p0) * out.Len())
					for q := range c {
						c[q] = float32(1 - 2*int(rng.Uint64()&1))
					}
					signs[o] = c
				}
				kept := append([][]float32(nil), signs...)
				if res, ok := vjp32(net, tr, signs, p1-p0, wantGlobal); ok {
					for _, i := range global {
						addSquares32(g[i], res[want[i]], 1/float64(probes))
					}
					for _, r := range res {
						putBuf(&r)
					}
					continue
				}
				signs = kept
			}
			cot := make([]*Tensor, len(outs))
			for o, out := range outs {
				cot[o] = tr.arena.alloc()(withP(p1-p0, out.Shape))
			}
			if signs != nil {
				for o, c := range cot {
					for q, v := range signs[o] {
						c.Data[q] = float64(v)
					}
				}
			} else if probes > 0 {
				for _, c := range cot {
					for q := range c.Data {
						if rng.Uint64()&1 == 0 {
							c.Data[q] = 1
						} else {
							c.Data[q] = -1
						}
					}
				}
			} else {
				// direction p is output component p (outputs concatenated).
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
			mm := matmul
			if probes > 0 {
				mm = matmul32 // the estimate's noise dwarfs float32 rounding
			}
			res, err := vjp(net, tr, cot, wantGlobal, mm, true)
			if err != nil {
				return nil, err
			}
			scale := 1.0
			if probes > 0 {
				scale = 1 / float64(probes)
			}
			for _, i := range global {
				addSquares(g[i], res[want[i]], scale)
			}
			for _, c := range cot {
				tr.arena.release(c.Data)
			}
			for _, r := range res {
				tr.arena.release(r.Data)
			}
		}
	}
	return g, nil
}

func maxWidth(tr *Trace) int {
	w := 1
	for _, v := range tr.Values {
		if v != nil && v.Len() > w {
			w = v.Len()
		}
	}
	return w
}

// addSquares32 is addSquares on a float32 [P, len(dst)] block.
func addSquares32(dst []float64, v []float32, scale float64) {
	per := len(dst)
	parallelChunks(per, func(lo, hi int) {
		d := dst[lo:hi]
		for p := 0; p < len(v)/per; p++ {
			for q, x := range v[p*per+lo : p*per+hi] {
				d[q] += scale * float64(x) * float64(x)
			}
		}
	})
}

// addSquares adds scale * sum over the leading (direction) axis of v^2.
// Each element adds its directions in order, so the split over
// goroutines does not change the result.
func addSquares(dst []float64, v *Tensor, scale float64) {
	per := len(dst)
	parallelChunks(per, func(lo, hi int) {
		// In blocks of dst that stay in cache over the directions.
		for b0 := lo; b0 < hi; b0 += 1024 {
			b1 := min(hi, b0+1024)
			d := dst[b0:b1]
			for p := 0; p < v.Len()/per; p++ {
				for q, x := range v.Data[p*per+b0 : p*per+b1] {
					d[q] += scale * x * x
				}
			}
		}
	})
}

// lossCotangents returns dL_n/dz for each prunable layer, [rows, Out],
// then, with gathers, for each embedding use of a tied weight.
func lossCotangents(net *onnxio.Network, tr *Trace, st *Stats, opt StatsOptions, start, n int, gathers bool) ([]*Tensor, error) {
	cot, err := lossCotangentAtOutput(net, tr, opt, start, n)
	if err != nil {
		return nil, err
	}
	want := st.targets(net, gathers)
	res, err := VJP(net, tr, cot, want)
	if err != nil {
		return nil, err
	}
	out := make([]*Tensor, len(want))
	for i, w := range want {
		out[i] = res[w]
	}
	return out, nil
}

// lossCotangentAtOutput is dL_n/dy for the batch starting at sample
// start, as one cotangent direction.
func lossCotangentAtOutput(net *onnxio.Network, tr *Trace, opt StatsOptions, start, n int) ([]*Tensor, error) {
	// The loss is on the first output (the prediction head); other outputs
	// get a zero cotangent.
	outs := tr.Outputs()
	y := outs[0]
	per := y.Len() / n
	cots := make([]*Tensor, len(outs))
	for o, out := range outs {
		cots[o] = Zeros(append([]int{1}, out.Shape...)...)
	}
	cot := cots[0]
	lab := opt.Labels
	finalSoftmax := lastOpKind(net) == onnxio.OpSoftmax
	for s := 0; s < n; s++ {
		row := y.Data[s*per : (s+1)*per]
		d := cot.Data[s*per : (s+1)*per]
		switch opt.Task {
		case TaskRegression:
			if lab.Target == nil || lab.Width != per {
				return nil, fmt.Errorf("regression targets have %d values per sample, the model outputs %d", lab.Width, per)
			}
			t := lab.Target[(start+s)*per : (start+s+1)*per]
			for q := range row {
				d[q] = 2 * (row[q] - t[q])
			}
		default:
			if lab.Class == nil {
				return nil, fmt.Errorf("classification needs class labels")
			}
			c := lab.Class[start+s]
			if c < 0 || c >= per {
				return nil, fmt.Errorf("label %d of sample %d is outside the model's %d classes", c, start+s, per)
			}
			if finalSoftmax {
				// L = -log y_c on probabilities.
				d[c] = -1 / math.Max(row[c], 1e-300)
				continue
			}
			// Cross-entropy on logits (also right for log-probabilities,
			// since LogSoftmax's VJP removes the difference).
			softmaxInto(d, row)
			d[c]--
		}
	}
	return cots, nil
}

func lastOpKind(net *onnxio.Network) onnxio.OpKind {
	if len(net.Outputs) == 1 {
		for i := len(net.Ops) - 1; i >= 0; i-- {
			if net.Ops[i].Out == net.Outputs[0] {
				return net.Ops[i].Kind
			}
		}
	}
	return -1
}

func softmaxInto(dst, x []float64) {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, v)
	}
	var s float64
	for q, v := range x {
		dst[q] = math.Exp(v - m)
		s += dst[q]
	}
	for q := range dst {
		dst[q] /= s
	}
}

// ECImportance computes METHOD.md's importance I_ij and optimal bias shift
// delta*_ij for one layer, row-major [Out, In]. S1 and S2 are kept (see
// ECImportanceInPlace for callers that no longer need them).
func (ls *LayerStats) ECImportance(n int) (imp, delta []float64) {
	ls.mustHaveSums("ECImportance")
	l := ls.Layer
	imp = make([]float64, l.Out*l.In)
	delta = make([]float64, l.Out*l.In)
	ls.ecInto(n, imp, delta)
	return imp, delta
}

// ecInto writes the importance and delta of every weight into imp and
// delta, which may be S2 and S1 themselves: each element of S1 and S2 is
// read before the same element of imp and delta is written.
func (ls *LayerStats) ecInto(n int, imp, delta []float64) {
	l := ls.Layer
	for i := 0; i < l.Out; i++ {
		row := i * l.In
		s0 := ls.S0[i]
		if s0 == 0 {
			// The neuron never reaches the output.
			clear(imp[row : row+l.In])
			clear(delta[row : row+l.In])
			continue
		}
		for j := 0; j < l.In; j++ {
			q := row + j
			w := l.At(q)
			s1, s2 := ls.S1[q], ls.S2[q]
			v := s2 - s1*s1/s0
			if v < 0 {
				v = 0 // rounding
			}
			imp[q] = w * w / float64(n) * v
			delta[q] = w * (s1 + ls.Shift[j]*s0) / s0
		}
	}
}

// mustHaveSums panics when S1/S2 were consumed by an in-place importance:
// a use after that is a bug of the caller, never something to compute on.
func (ls *LayerStats) mustHaveSums(what string) {
	if ls.S1 == nil || ls.S2 == nil {
		panic("analysis: " + what + " of layer " + ls.Layer.Name + " after its S1/S2 were consumed in place")
	}
}

// NoCompImportance is (1/N) sum_n g_i (w_ij a_j)^2: EC with delta = 0.
func (ls *LayerStats) NoCompImportance(n int) []float64 {
	ls.mustHaveSums("NoCompImportance")
	imp := make([]float64, ls.Layer.Out*ls.Layer.In)
	ls.noCompInto(n, imp)
	return imp
}

// noCompInto writes NoCompImportance into imp, which may be S1 or S2
// (each element is read before it is written).
func (ls *LayerStats) noCompInto(n int, imp []float64) {
	l := ls.Layer
	for i := 0; i < l.Out; i++ {
		for j := 0; j < l.In; j++ {
			q := i*l.In + j
			c := ls.Shift[j]
			s2raw := ls.S2[q] + 2*c*ls.S1[q] + c*c*ls.S0[i]
			w := l.At(q)
			imp[q] = math.Max(0, w*w*s2raw/float64(n))
		}
	}
}
