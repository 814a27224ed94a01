package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"
	"slices"

	"github.com/ecprune/ecprune/onnxio"
)

// Recurrent layers: LSTM, GRU and RNN, forward, reverse or bidirectional,
// layout 0 ([seq, batch, ...]) or 1 (batch first), with initial states,
// LSTM peepholes, GRU's linear_before_reset and the clip attribute. W, R,
// B and P are the layer's constants; the derivatives are wrt X and the
// initial states: forward mode through time for the JVP, back-propagation
// through time for the VJP. Prepare runs the recurrence once and keeps
// every step's gate values and activation derivatives.

func init() {
	for _, t := range []string{"LSTM", "GRU", "RNN"} {
		register(t, &Kernel{Check: rnnCheck, Forward: rnnForward, Prepare: rnnPrepare, JVP: rnnJVP, VJP: rnnVJP})
	}
}

// rnnAct is an activation function of a recurrent layer: f and its
// derivative given the input z and the output a.
type rnnAct struct {
	f func(z float64) float64
	d func(z, a float64) float64
}

var rnnActs = map[string]rnnAct{
	"Sigmoid":  {sigmoid, func(_, a float64) float64 { return a * (1 - a) }},
	"Tanh":     {math.Tanh, func(_, a float64) float64 { return 1 - a*a }},
	"Relu":     {func(z float64) float64 { return max(z, 0) }, func(z, _ float64) float64 { return stepAbove(z, 0) }},
	"Softsign": {func(z float64) float64 { return z / (1 + math.Abs(z)) }, func(z, _ float64) float64 { s := 1 + math.Abs(z); return 1 / (s * s) }},
	"Softplus": {softplusF, func(z, _ float64) float64 { return sigmoid(z) }},
}

func stepAbove(z, t float64) float64 {
	if z > t {
		return 1
	}
	return 0
}

// rnnGateCount is the number of gates (blocks of hidden_size rows of W)
// and of activations per direction.
func rnnGateCount(typ string) (gates, acts int) {
	switch typ {
	case "LSTM":
		return 4, 3
	case "GRU":
		return 3, 2
	}
	return 1, 1
}

func rnnDefaultActs(typ string) []string {
	switch typ {
	case "LSTM":
		return []string{"Sigmoid", "Tanh", "Tanh"}
	case "GRU":
		return []string{"Sigmoid", "Tanh"}
	}
	return []string{"Tanh"}
}

func rnnDirs(op *onnxio.Op) (int, error) {
	switch d := op.AttrString("direction", "forward"); d {
	case "forward", "reverse":
		return 1, nil
	case "bidirectional":
		return 2, nil
	default:
		return 0, fmt.Errorf("direction %q", d)
	}
}

func rnnCheck(op *onnxio.Op) error {
	if _, err := rnnDirs(op); err != nil {
		return err
	}
	if op.AttrInt("hidden_size", 0) <= 0 {
		return fmt.Errorf("hidden_size is missing")
	}
	if op.AttrInt("input_forget", 0) != 0 {
		return fmt.Errorf("input_forget is not supported")
	}
	if l := op.AttrInt("layout", 0); l != 0 && l != 1 {
		return fmt.Errorf("layout %d", l)
	}
	for _, a := range op.Attrs["activations"].Strs {
		if _, ok := rnnActs[a]; !ok {
			return fmt.Errorf("activation %s is not supported", a)
		}
	}
	if op.OutIndex > 2 || op.OutIndex == 2 && op.Type != "LSTM" {
		return fmt.Errorf("output %d is not supported", op.OutIndex)
	}
	return nil
}

// rnnGeom is a recurrent layer's configuration and shapes.
type rnnGeom struct {
	typ                      string
	S, B, I, H, dirs, layout int
	gates                    int
	acts                     [][]rnnAct // per direction
	clip                     float64    // 0: none
	lbr                      bool       // GRU linear_before_reset
	reverse                  []bool     // per direction
	w, r, bias, peep         [][]float64
	wb                       [][]float64 // per direction: the input biases added to X W^T, [gates*H]
	rbh                      [][]float64 // GRU with linear_before_reset: Rbh, inside r * (.)
	h0, c0                   [][]float64 // per direction [B*H]
	yShape, hShape           []int
}

func rnnGeomOf(op *onnxio.Op, in []*Tensor) (*rnnGeom, error) {
	if err := rnnCheck(op); err != nil {
		return nil, err
	}
	x, w, err := need2(in)
	if err != nil {
		return nil, err
	}
	r, err := need(in, 2)
	if err != nil {
		return nil, err
	}
	g := &rnnGeom{typ: op.Type, H: int(op.AttrInt("hidden_size", 0)), layout: int(op.AttrInt("layout", 0)),
		clip: op.AttrFloat("clip", 0), lbr: op.AttrInt("linear_before_reset", 0) != 0}
	g.dirs, _ = rnnDirs(op)
	g.gates, _ = rnnGateCount(op.Type)
	if x.Rank() != 3 {
		return nil, fmt.Errorf("X of shape %s, want rank 3", plain.Shape(x.Shape))
	}
	g.S, g.B, g.I = x.Shape[0], x.Shape[1], x.Shape[2]
	if g.layout == 1 {
		g.S, g.B = g.B, g.S
	}
	gh := g.gates * g.H
	if !slices.Equal(w.Shape, []int{g.dirs, gh, g.I}) {
		return nil, fmt.Errorf("W of shape %s, want %s", plain.Shape(w.Shape), plain.Shape([]int{g.dirs, gh, g.I}))
	}
	if !slices.Equal(r.Shape, []int{g.dirs, gh, g.H}) {
		return nil, fmt.Errorf("R of shape %s, want %s", plain.Shape(r.Shape), plain.Shape([]int{g.dirs, gh, g.H}))
	}
	at := func(k int) *Tensor {
		if k < len(in) {
			return in[k]
		}
		return nil
	}
	if sl := at(4); sl != nil {
		for _, v := range sl.Data {
			if int(v) != g.S {
				return nil, fmt.Errorf("sequence_lens %s: only full-length sequences (%d) are supported", plain.List(sl.Data), g.S)
			}
		}
	}
	names := rnnDefaultActs(op.Type)
	if a := op.Attrs["activations"].Strs; len(a) > 0 {
		names = a
	}
	_, per := rnnGateCount(op.Type)
	if len(names) != per && len(names) != per*g.dirs {
		return nil, fmt.Errorf("%d activations for %d direction(s)", len(names), g.dirs)
	}
	dir := op.AttrString("direction", "forward")
	stateShape := []int{g.dirs, g.B, g.H}
	if g.layout == 1 {
		stateShape = []int{g.B, g.dirs, g.H}
	}
	for _, k := range []int{5, 6} {
		if t := at(k); t != nil && !slices.Equal(t.Shape, stateShape) {
			return nil, fmt.Errorf("input %d of shape %s, want %s", k, plain.Shape(t.Shape), plain.Shape(stateShape))
		}
	}
	for d := 0; d < g.dirs; d++ {
		acts := make([]rnnAct, per)
		for k := range acts {
			acts[k] = rnnActs[names[(d*per+k)%len(names)]]
		}
		g.acts = append(g.acts, acts)
		g.reverse = append(g.reverse, dir == "reverse" || dir == "bidirectional" && d == 1)
		g.w = append(g.w, w.Data[d*gh*g.I:(d+1)*gh*g.I])
		g.r = append(g.r, r.Data[d*gh*g.H:(d+1)*gh*g.H])
		wb := make([]float64, gh)
		var rbh []float64
		if b := at(3); b != nil {
			if !slices.Equal(b.Shape, []int{g.dirs, 2 * gh}) {
				return nil, fmt.Errorf("B of shape %s, want %s", plain.Shape(b.Shape), plain.Shape([]int{g.dirs, 2 * gh}))
			}
			bd := b.Data[d*2*gh : (d+1)*2*gh]
			for j := range wb {
				wb[j] = bd[j] + bd[gh+j]
			}
			if g.typ == "GRU" && g.lbr {
				rbh = bd[gh+2*g.H : 2*gh]
				for j := 2 * g.H; j < gh; j++ {
					wb[j] = bd[j]
				}
			}
		}
		if rbh == nil && g.typ == "GRU" && g.lbr {
			rbh = make([]float64, g.H)
		}
		g.wb, g.rbh = append(g.wb, wb), append(g.rbh, rbh)
		g.h0 = append(g.h0, g.state(at(5), d))
		if g.typ == "LSTM" {
			g.c0 = append(g.c0, g.state(at(6), d))
			p := make([]float64, 3*g.H)
			if pt := at(7); pt != nil {
				if !slices.Equal(pt.Shape, []int{g.dirs, 3 * g.H}) {
					return nil, fmt.Errorf("P of shape %s, want %s", plain.Shape(pt.Shape), plain.Shape([]int{g.dirs, 3 * g.H}))
				}
				copy(p, pt.Data[d*3*g.H:])
			}
			g.peep = append(g.peep, p)
		}
	}
	if g.layout == 0 {
		g.yShape = []int{g.S, g.dirs, g.B, g.H}
	} else {
		g.yShape = []int{g.B, g.S, g.dirs, g.H}
	}
	g.hShape = stateShape
	return g, nil
}

// state copies direction d of an initial state tensor (nil: zeros) into
// a [B*H] slice.
func (g *rnnGeom) state(t *Tensor, d int) []float64 {
	s := make([]float64, g.B*g.H)
	if t == nil {
		return s
	}
	for b := 0; b < g.B; b++ {
		copy(s[b*g.H:(b+1)*g.H], t.Data[g.stateOff(d, b):])
	}
	return s
}

// xRow is the row of X (and of X W^T) of time t and batch entry b.
func (g *rnnGeom) xRow(t, b int) int {
	if g.layout == 0 {
		return t*g.B + b
	}
	return b*g.S + t
}

// yOff is the offset of Y[t, d, b, :] (layout 0) or Y[b, t, d, :].
func (g *rnnGeom) yOff(t, d, b int) int {
	if g.layout == 0 {
		return ((t*g.dirs+d)*g.B + b) * g.H
	}
	return ((b*g.S+t)*g.dirs + d) * g.H
}

// stateOff is the offset of Y_h[d, b, :] (layout 0) or Y_h[b, d, :].
func (g *rnnGeom) stateOff(d, b int) int {
	if g.layout == 0 {
		return (d*g.B + b) * g.H
	}
	return (b*g.dirs + d) * g.H
}

// timeOf is the time index that direction d processes at step s.
func (g *rnnGeom) timeOf(d, s int) int {
	if g.reverse[d] {
		return g.S - 1 - s
	}
	return s
}

// act applies activation k of direction d with the clip: a = f(clip(z)),
// da = f'(clip(z)) (zero where the clip is active).
func (g *rnnGeom) act(d, k int, z float64) (a, da float64) {
	f := g.acts[d][k]
	if g.clip > 0 && (z > g.clip || z < -g.clip) {
		a = f.f(max(-g.clip, min(g.clip, z)))
		return a, 0
	}
	a = f.f(z)
	return a, f.d(z, a)
}

// rnnTraj is one direction's recurrence: per step s (in processing
// order) the hidden state h[s], LSTM's cell state c[s], the gate values
// a[s] and their activations' derivatives da[s] ([B, gates*H]); for LSTM
// hc[s] = h(C) and dhc[s] = h'(C); for GRU with linear_before_reset,
// hr[s] = H_prev Rh^T + Rbh.
type rnnTraj struct {
	h, c, a, da, hc, dhc, hr [][]float64
}

// hPrev is the hidden state before step s.
func (g *rnnGeom) hPrev(tr *rnnTraj, d, s int) []float64 {
	if s == 0 {
		return g.h0[d]
	}
	return tr.h[s-1]
}

func (g *rnnGeom) cPrev(tr *rnnTraj, d, s int) []float64 {
	if s == 0 {
		return g.c0[d]
	}
	return tr.c[s-1]
}

// run computes direction d's recurrence on X.
func (g *rnnGeom) run(x *Tensor, d int) *rnnTraj {
	H, B, gh := g.H, g.B, g.gates*g.H
	xw := make([]float64, g.S*B*gh)
	matmul(false, true, g.S*B, gh, g.I, x.Data, g.w[d], xw, 0)
	tr := &rnnTraj{}
	pre := make([]float64, B*gh)
	for s := 0; s < g.S; s++ {
		t := g.timeOf(d, s)
		hp := g.hPrev(tr, d, s)
		// pre = H_prev R^T (GRU without linear_before_reset: z and r only).
		rcols := gh
		if g.typ == "GRU" && !g.lbr {
			rcols = 2 * H
			matmul(false, true, B, rcols, H, hp, g.r[d], pre, 0)
			// Repack [B, 2H] into the [B, 3H] rows (backwards: in place).
			for b := B - 1; b >= 0; b-- {
				copy(pre[b*gh:b*gh+2*H], pre[b*2*H:(b+1)*2*H])
			}
		} else {
			matmul(false, true, B, gh, H, hp, g.r[d], pre, 0)
		}
		a, da := make([]float64, B*gh), make([]float64, B*gh)
		h := make([]float64, B*H)
		switch g.typ {
		case "RNN":
			for b := 0; b < B; b++ {
				xr := xw[g.xRow(t, b)*gh:]
				for j := 0; j < H; j++ {
					k := b*H + j
					a[k], da[k] = g.act(d, 0, pre[k]+xr[j]+g.wb[d][j])
					h[k] = a[k]
				}
			}
		case "LSTM":
			cp := g.cPrev(tr, d, s)
			c, hc, dhc := make([]float64, B*H), make([]float64, B*H), make([]float64, B*H)
			p := g.peep[d]
			for b := 0; b < B; b++ {
				xr, pr := xw[g.xRow(t, b)*gh:], pre[b*gh:]
				ar, dr := a[b*gh:], da[b*gh:]
				for j := 0; j < H; j++ {
					k := b*H + j
					z := func(gate int) float64 { return pr[gate*H+j] + xr[gate*H+j] + g.wb[d][gate*H+j] }
					// Gate order i, o, f, c; peepholes i, o, f.
					ar[j], dr[j] = g.act(d, 0, z(0)+p[j]*cp[k])
					ar[2*H+j], dr[2*H+j] = g.act(d, 0, z(2)+p[2*H+j]*cp[k])
					ar[3*H+j], dr[3*H+j] = g.act(d, 1, z(3))
					c[k] = ar[2*H+j]*cp[k] + ar[j]*ar[3*H+j]
					ar[H+j], dr[H+j] = g.act(d, 0, z(1)+p[H+j]*c[k])
					hc[k], dhc[k] = g.act(d, 2, c[k])
					h[k] = ar[H+j] * hc[k]
				}
			}
			tr.c, tr.hc, tr.dhc = append(tr.c, c), append(tr.hc, hc), append(tr.dhc, dhc)
		case "GRU":
			var hr []float64
			if g.lbr {
				hr = make([]float64, B*H)
			}
			u := make([]float64, B*H) // r * H_prev, without linear_before_reset
			for b := 0; b < B; b++ {
				xr, pr := xw[g.xRow(t, b)*gh:], pre[b*gh:]
				ar, dr := a[b*gh:], da[b*gh:]
				for j := 0; j < H; j++ {
					k := b*H + j
					ar[j], dr[j] = g.act(d, 0, pr[j]+xr[j]+g.wb[d][j])
					ar[H+j], dr[H+j] = g.act(d, 0, pr[H+j]+xr[H+j]+g.wb[d][H+j])
					if g.lbr {
						hr[k] = pr[2*H+j] + g.rbh[d][j]
					} else {
						u[k] = ar[H+j] * hp[k]
					}
				}
			}
			var uh []float64
			if !g.lbr {
				uh = make([]float64, B*H)
				matmul(false, true, B, H, H, u, g.r[d][2*H*H:], uh, 0)
			}
			for b := 0; b < B; b++ {
				xr := xw[g.xRow(t, b)*gh:]
				ar, dr := a[b*gh:], da[b*gh:]
				for j := 0; j < H; j++ {
					k := b*H + j
					zh := xr[2*H+j] + g.wb[d][2*H+j]
					if g.lbr {
						zh += ar[H+j] * hr[k]
					} else {
						zh += uh[k]
					}
					ar[2*H+j], dr[2*H+j] = g.act(d, 1, zh)
					z := ar[j]
					h[k] = (1-z)*ar[2*H+j] + z*hp[k]
				}
			}
			tr.hr = append(tr.hr, hr)
		}
		tr.h, tr.a, tr.da = append(tr.h, h), append(tr.a, a), append(tr.da, da)
	}
	return tr
}

// rnnState is a recurrent layer's linearisation point.
type rnnState struct {
	*rnnGeom
	trajs []*rnnTraj
}

func rnnPrepare(op *onnxio.Op, in []*Tensor, _ *Tensor) (any, error) {
	g, err := rnnGeomOf(op, in)
	if err != nil {
		return nil, err
	}
	st := &rnnState{rnnGeom: g}
	for d := 0; d < g.dirs; d++ {
		st.trajs = append(st.trajs, g.run(in[0], d))
	}
	return st, nil
}

func rnnForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	s, err := rnnPrepare(op, in, nil)
	if err != nil {
		return nil, err
	}
	st := s.(*rnnState)
	hs, cs := make([][][]float64, st.dirs), make([][][]float64, st.dirs)
	for d, tr := range st.trajs {
		hs[d], cs[d] = tr.h, tr.c
	}
	return st.assemble(op.OutIndex, hs, cs), nil
}

// assemble builds output k (Y, Y_h or Y_c) from per-direction,
// per-step hidden states hs[d][s] and cell states cs[d][s].
func (g *rnnGeom) assemble(k int, hs, cs [][][]float64) *Tensor {
	if k == 0 {
		y := NewTensor(g.yShape, nil)
		for d := range hs {
			for s, h := range hs[d] {
				t := g.timeOf(d, s)
				for b := 0; b < g.B; b++ {
					copy(y.Data[g.yOff(t, d, b):g.yOff(t, d, b)+g.H], h[b*g.H:(b+1)*g.H])
				}
			}
		}
		return y
	}
	y := NewTensor(g.hShape, nil)
	src := hs
	if k == 2 {
		src = cs
	}
	for d := range src {
		last := src[d][g.S-1]
		for b := 0; b < g.B; b++ {
			copy(y.Data[g.stateOff(d, b):g.stateOff(d, b)+g.H], last[b*g.H:(b+1)*g.H])
		}
	}
	return y
}

// rnnJVP pushes the tangents of X, initial_h and initial_c forward
// through time.
func rnnJVP(op *onnxio.Op, _ []*Tensor, _ *Tensor, s any, tin []*Tensor) (*Tensor, error) {
	st := s.(*rnnState)
	at := func(k int) *Tensor {
		if k < len(tin) {
			return tin[k]
		}
		return nil
	}
	if err := rnnConstWeights(tin); err != nil {
		return nil, err
	}
	tx := at(0)
	if tx == nil && at(5) == nil && at(6) == nil {
		return nil, nil
	}
	H, B, gh := st.H, st.B, st.gates*st.H
	hs, cs := make([][][]float64, st.dirs), make([][][]float64, st.dirs)
	for d, tr := range st.trajs {
		var dxw []float64
		if tx != nil {
			dxw = make([]float64, st.S*B*gh)
			matmul(false, true, st.S*B, gh, st.I, tx.Data, st.w[d], dxw, 0)
		}
		dh := st.state(at(5), d)
		var dc []float64
		if st.typ == "LSTM" {
			dc = st.state(at(6), d)
		}
		dpre := make([]float64, B*gh)
		for s := 0; s < st.S; s++ {
			t := st.timeOf(d, s)
			hp := st.hPrev(tr, d, s)
			// dpre: the gates' pre-activation tangents; for GRU's candidate
			// only the recurrent part (X's part is added below, since
			// linear_before_reset puts r between the two).
			if st.typ == "GRU" && !st.lbr {
				matmul(false, true, B, 2*H, H, dh, st.r[d], dpre, 0)
				for b := B - 1; b >= 0; b-- {
					copy(dpre[b*gh:b*gh+2*H], dpre[b*2*H:(b+1)*2*H])
					clear(dpre[b*gh+2*H : (b+1)*gh])
				}
			} else {
				matmul(false, true, B, gh, H, dh, st.r[d], dpre, 0)
			}
			if dxw != nil {
				cols := gh
				if st.typ == "GRU" {
					cols = 2 * H
				}
				for b := 0; b < B; b++ {
					row, xr := dpre[b*gh:b*gh+cols], dxw[st.xRow(t, b)*gh:]
					for j := range row {
						row[j] += xr[j]
					}
				}
			}
			a, da := tr.a[s], tr.da[s]
			nh := make([]float64, B*H)
			switch st.typ {
			case "RNN":
				for k := range nh {
					nh[k] = da[k] * dpre[k]
				}
			case "LSTM":
				cp := st.cPrev(tr, d, s)
				p := st.peep[d]
				nc := make([]float64, B*H)
				for b := 0; b < B; b++ {
					ar, dr, pr := a[b*gh:], da[b*gh:], dpre[b*gh:]
					for j := 0; j < H; j++ {
						k := b*H + j
						di := dr[j] * (pr[j] + p[j]*dc[k])
						df := dr[2*H+j] * (pr[2*H+j] + p[2*H+j]*dc[k])
						dcc := dr[3*H+j] * pr[3*H+j]
						nc[k] = df*cp[k] + ar[2*H+j]*dc[k] + di*ar[3*H+j] + ar[j]*dcc
						do := dr[H+j] * (pr[H+j] + p[H+j]*nc[k])
						nh[k] = do*tr.hc[s][k] + ar[H+j]*tr.dhc[s][k]*nc[k]
					}
				}
				dc = nc
				cs[d] = append(cs[d], nc)
			case "GRU":
				var duh []float64
				if !st.lbr {
					du := make([]float64, B*H)
					for b := 0; b < B; b++ {
						ar, dr, pr := a[b*gh:], da[b*gh:], dpre[b*gh:]
						for j := 0; j < H; j++ {
							k := b*H + j
							du[k] = dr[H+j]*pr[H+j]*hp[k] + ar[H+j]*dh[k]
						}
					}
					duh = make([]float64, B*H)
					matmul(false, true, B, H, H, du, st.r[d][2*H*H:], duh, 0)
				}
				for b := 0; b < B; b++ {
					ar, dr, pr := a[b*gh:], da[b*gh:], dpre[b*gh:]
					for j := 0; j < H; j++ {
						k := b*H + j
						dz := dr[j] * pr[j]
						dzh := dxwAt(dxw, st, t, b, 2*H+j)
						if st.lbr {
							dzh += dr[H+j]*pr[H+j]*tr.hr[s][k] + ar[H+j]*pr[2*H+j]
						} else {
							dzh += duh[k]
						}
						dhh := dr[2*H+j] * dzh
						nh[k] = dz*(hp[k]-ar[2*H+j]) + (1-ar[j])*dhh + ar[j]*dh[k]
					}
				}
			}
			dh = nh
			hs[d] = append(hs[d], nh)
		}
	}
	return st.assemble(op.OutIndex, hs, cs), nil
}

// rnnConstWeights refuses derivatives wrt W, R, B and P (inputs 1, 2, 3
// and 7), which the kernel does not compute: they are initializers in
// every export.
func rnnConstWeights(ts []*Tensor) error {
	for _, k := range []int{1, 2, 3, 7} {
		if k < len(ts) && ts[k] != nil {
			return fmt.Errorf("input %d (weights) depends on the variables; only X and the initial states are differentiated", k)
		}
	}
	return nil
}

// dxwAt is the input part of the tangent of gate column j at (t, b), 0
// when X has no tangent.
func dxwAt(dxw []float64, st *rnnState, t, b, j int) float64 {
	if dxw == nil {
		return 0
	}
	return dxw[st.xRow(t, b)*st.gates*st.H+j]
}

// rnnVJP back-propagates the output's cotangent through time into X,
// initial_h and initial_c.
func rnnVJP(op *onnxio.Op, _ []*Tensor, _ *Tensor, s any, gr *Tensor, gin []*Tensor) error {
	st := s.(*rnnState)
	at := func(k int) *Tensor {
		if k < len(gin) {
			return gin[k]
		}
		return nil
	}
	if err := rnnConstWeights(gin); err != nil {
		return err
	}
	gx, gh0, gc0 := at(0), at(5), at(6)
	if gx == nil && gh0 == nil && gc0 == nil {
		return nil
	}
	H, B, G := st.H, st.B, st.gates*st.H
	for d, tr := range st.trajs {
		gH := make([]float64, B*H)
		var gC []float64
		if st.typ == "LSTM" {
			gC = make([]float64, B*H)
		}
		switch op.OutIndex {
		case 1:
			for b := 0; b < B; b++ {
				copy(gH[b*H:(b+1)*H], gr.Data[st.stateOff(d, b):])
			}
		case 2:
			for b := 0; b < B; b++ {
				copy(gC[b*H:(b+1)*H], gr.Data[st.stateOff(d, b):])
			}
		}
		gpre := make([]float64, st.S*B*G) // per step s, [B, G]: the gates' pre-activation cotangents
		gx2 := make([]float64, B*H)       // GRU: cotangent of the input part of the candidate
		for s := st.S - 1; s >= 0; s-- {
			t := st.timeOf(d, s)
			if op.OutIndex == 0 {
				for b := 0; b < B; b++ {
					row := gH[b*H : (b+1)*H]
					for j, v := range gr.Data[st.yOff(t, d, b) : st.yOff(t, d, b)+H] {
						row[j] += v
					}
				}
			}
			a, da := tr.a[s], tr.da[s]
			gp := gpre[s*B*G : (s+1)*B*G]
			hp := st.hPrev(tr, d, s)
			nH := make([]float64, B*H) // cotangent of H_prev
			switch st.typ {
			case "RNN":
				for k, v := range gH {
					gp[k] = v * da[k]
				}
				matmul(false, false, B, H, G, gp, st.r[d], nH, 0)
			case "LSTM":
				cp := st.cPrev(tr, d, s)
				p := st.peep[d]
				nC := make([]float64, B*H)
				for b := 0; b < B; b++ {
					ar, dr, pr := a[b*G:], da[b*G:], gp[b*G:]
					for j := 0; j < H; j++ {
						k := b*H + j
						gct := gC[k] + gH[k]*ar[H+j]*tr.dhc[s][k]
						gzo := gH[k] * tr.hc[s][k] * dr[H+j]
						gct += p[H+j] * gzo
						gzi := gct * ar[3*H+j] * dr[j]
						gzc := gct * ar[j] * dr[3*H+j]
						gzf := gct * cp[k] * dr[2*H+j]
						pr[j], pr[H+j], pr[2*H+j], pr[3*H+j] = gzi, gzo, gzf, gzc
						nC[k] = gct*ar[2*H+j] + p[j]*gzi + p[2*H+j]*gzf
					}
				}
				matmul(false, false, B, H, G, gp, st.r[d], nH, 0)
				gC = nC
			case "GRU":
				gu := make([]float64, B*H) // without linear_before_reset: cotangent of r * H_prev
				for b := 0; b < B; b++ {
					ar, dr, pr := a[b*G:], da[b*G:], gp[b*G:]
					for j := 0; j < H; j++ {
						k := b*H + j
						gzh := gH[k] * (1 - ar[j]) * dr[2*H+j]
						pr[j] = gH[k] * (hp[k] - ar[2*H+j]) * dr[j]
						pr[2*H+j] = gzh
						nH[k] = gH[k] * ar[j]
						if st.lbr {
							pr[H+j] = gzh * tr.hr[s][k] * dr[H+j]
						}
					}
				}
				if st.lbr {
					// The recurrent part of the candidate is r * (H_prev Rh^T):
					// its cotangent is gzh * r, while X's part is gzh.
					for b := 0; b < B; b++ {
						ar, pr := a[b*G:], gp[b*G:]
						for j := 0; j < H; j++ {
							gx2[b*H+j] = pr[2*H+j]
							pr[2*H+j] *= ar[H+j]
						}
					}
					matmul(false, false, B, H, G, gp, st.r[d], nH, 1)
					for b := 0; b < B; b++ {
						copy(gp[b*G+2*H:(b+1)*G], gx2[b*H:(b+1)*H])
					}
				} else {
					for b := 0; b < B; b++ {
						copy(gx2[b*H:(b+1)*H], gp[b*G+2*H:(b+1)*G])
					}
					matmul(false, false, B, H, H, gx2, st.r[d][2*H*H:], gu, 0)
					for b := 0; b < B; b++ {
						ar, dr, pr := a[b*G:], da[b*G:], gp[b*G:]
						for j := 0; j < H; j++ {
							k := b*H + j
							pr[H+j] = gu[k] * hp[k] * dr[H+j]
							nH[k] += gu[k] * ar[H+j]
						}
					}
					// H_prev reaches z and r through R's first 2H rows.
					zr := make([]float64, B*2*H)
					for b := 0; b < B; b++ {
						copy(zr[b*2*H:(b+1)*2*H], gp[b*G:b*G+2*H])
					}
					matmul(false, false, B, H, 2*H, zr, st.r[d], nH, 1)
				}
			}
			gH = nH
		}
		if gx != nil {
			// X's rows in step order: gX[row(t, b)] += gpre[s, b] W.
			gxs := make([]float64, st.S*B*st.I)
			matmul(false, false, st.S*B, st.I, G, gpre, st.w[d], gxs, 0)
			for s := 0; s < st.S; s++ {
				t := st.timeOf(d, s)
				for b := 0; b < B; b++ {
					dst := gx.Data[st.xRow(t, b)*st.I : (st.xRow(t, b)+1)*st.I]
					for j, v := range gxs[(s*B+b)*st.I : (s*B+b+1)*st.I] {
						dst[j] += v
					}
				}
			}
		}
		if gh0 != nil {
			for b := 0; b < B; b++ {
				dst := gh0.Data[st.stateOff(d, b):]
				for j, v := range gH[b*H : (b+1)*H] {
					dst[j] += v
				}
			}
		}
		if gc0 != nil && gC != nil {
			for b := 0; b < B; b++ {
				dst := gc0.Data[st.stateOff(d, b):]
				for j, v := range gC[b*H : (b+1)*H] {
					dst[j] += v
				}
			}
		}
	}
	return nil
}
