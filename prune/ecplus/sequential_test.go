package ecplus

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/internal/tol"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// TestECPlusCost checks the sums and the removal cost against a direct
// per-sample computation with g from finite differences.
func TestECPlusCost(t *testing.T) {
	cases := []struct {
		name   string
		act    onnxio.OpKind
		head   onnxio.OpKind
		lambda float64
		c      float64
		dead   bool // layer 1 has a neuron that never reaches the output
		noBias bool
	}{
		{"tanh", onnxio.OpTanh, -1, 1, 0.5, false, false},
		{"relu no lambda", onnxio.OpRelu, -1, 0, 0.5, false, false},
		{"softmax head full credit", onnxio.OpTanh, onnxio.OpSoftmax, 2, 1, false, false},
		{"dead neuron", onnxio.OpTanh, -1, 1, 0.5, true, false},
		{"no bias", onnxio.OpSigmoid, -1, 1, 0.5, false, true},
	}
	for k, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 7, 1<<25, 5e7)
			rng := rand.New(rand.NewPCG(uint64(k), 1))
			var nb []int
			if tc.noBias {
				nb = []int{1}
			}
			net := mlp(rng, []int{4, 6, 5, 3}, tc.act, tc.head, nb...)
			if tc.dead {
				for o := 0; o < 3; o++ {
					net.Layers[2].W[o*5+2] = 0
				}
			}
			data := randData(rng, 23, 4)
			e := setup(t, net, data, Options{Lambda: tc.lambda, C: tc.c, Rounds: 2, RefitSteps: 0}, analysis.TaskRegression)
			cur := net.Clone()
			damage(cur, rng)
			s, _ := layerSums(t, e, cur, 1)
			ps := bruteForce(t, net, cur, data, 1)
			gp := ps.flatG(tc.lambda)
			l := net.Layers[1]
			want := make([]float64, l.Out*l.In)
			for i := 0; i < l.Out; i++ {
				var s0, ma, me float64
				for n := range gp {
					s0 += gp[n][i]
					me += gp[n][i] * (ps.zc[n][i] - ps.z0[n][i])
				}
				if s0 == 0 {
					continue
				}
				me /= s0
				for j := 0; j < l.In; j++ {
					ma = 0
					for n := range gp {
						ma += gp[n][i] * ps.a[n][j] / s0
					}
					var v, cv float64
					for n := range gp {
						da := ps.a[n][j] - ma
						v += gp[n][i] * da * da
						cv += gp[n][i] * (ps.zc[n][i] - ps.z0[n][i] - me) * da
					}
					w := l.W[i*l.In+j]
					want[i*l.In+j] = w*w*v - 2*tc.c*w*cv
				}
			}
			got := s.costs(new([]float64), cur.Layers[1].W, tc.c)
			tol.CheckClose(t, "cost", got, want, 1e-6, 1e-10)
			if tc.dead {
				for j := 0; j < l.In; j++ {
					if got[2*l.In+j] != 0 {
						t.Errorf("cost of w[2,%d] = %g for a neuron that never reaches the output", j, got[2*l.In+j])
					}
				}
			}
			// The first term is N times EC's importance on a' (with g').
			for q := range got {
				if v := s.variance(q); v < 0 {
					t.Fatalf("variance[%d] = %g < 0", q, v)
				}
			}
		})
	}
}

// TestECPlusConstantFeature: a feature constant over the calibration set
// has zero variance exactly, so its removal costs nothing beyond the
// credit (which is 0 too: no covariance with a constant).
func TestECPlusConstantFeature(t *testing.T) {
	withLimits(t, 5, 1<<25, 5e7)
	rng := rand.New(rand.NewPCG(3, 3))
	net := mlp(rng, []int{3, 4, 2}, onnxio.OpTanh, -1)
	data := randData(rng, 17, 3)
	e := setup(t, net, data, Options{Lambda: 1, C: 0.5, Rounds: 1}, analysis.TaskRegression)
	s, _ := layerSums(t, e, net.Clone(), 0)
	cost := s.costs(new([]float64), net.Layers[0].W, 0.5)
	for i := 0; i < 4; i++ {
		if s.variance(i*3) != 0 || cost[i*3] != 0 {
			t.Errorf("row %d: constant feature has variance %g, cost %g; want 0", i, s.variance(i*3), cost[i*3])
		}
	}
}

// TestECPlusFirstPass: on the original input, the moments rebuilt from
// Collect's sums equal those accumulated directly, and Collect's sums are
// not used when its g differs (probes drawn with another seed).
func TestECPlusFirstPass(t *testing.T) {
	cases := []struct {
		name   string
		stats  analysis.StatsOptions
		reused bool
	}{
		{"reverse", analysis.StatsOptions{}, true},
		{"forward", analysis.StatsOptions{AD: analysis.ADForward}, true},
		{"probes", analysis.StatsOptions{Probes: 1}, false},
		{"loss objective", analysis.StatsOptions{Objective: analysis.ObjLoss, Task: analysis.TaskRegression}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 6, 1<<25, 5e7)
			rng := rand.New(rand.NewPCG(4, 4))
			net := mlp(rng, []int{4, 6, 5, 3}, onnxio.OpTanh, -1)
			data := randData(rng, 20, 4)
			if tc.stats.Objective == analysis.ObjLoss {
				tc.stats.Labels = &analysis.Labels{Target: make([]float64, 20*3), Width: 3}
			}
			st := collect(t, net, data, tc.stats)
			e, err := newECP(net, data, st, Options{Lambda: 1.5, C: 0.5, Rounds: 2}, analysis.TaskRegression, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.origPass(); err != nil {
				t.Fatal(err)
			}
			if got := e.collectMatches(0); got != tc.reused {
				t.Fatalf("collectMatches = %v, want %v", got, tc.reused)
			}
			cur := net.Clone()
			for li := range e.st.Layers {
				if !e.upstreamClean(cur, li) {
					t.Fatalf("layer %d: upstream not clean in an unchanged network", li)
				}
				l := cur.Layers[li]
				rd := newResident(e.n*e.rowsPer[li], l.Out, l.In)
				fast, err := e.firstPass(cur, li, true, rd)
				if err != nil {
					t.Fatal(err)
				}
				slow, ref := layerSums(t, e, cur, li)
				v1, v2 := make([]float64, len(l.W)), make([]float64, len(l.W))
				for q := range v1 {
					v1[q], v2[q] = fast.variance(q), slow.variance(q)
				}
				tol.CheckClose(t, "variance", v1, v2, 1e-9, 1e-12)
				tol.CheckClose(t, "S0", fast.s0, slow.s0, 1e-12, 0)
				tol.CheckClose(t, "sum g e", fast.se, make([]float64, l.Out), 0, 0)
				tol.CheckClose(t, "e", rd.e, ref.e, 0, 0)
				tol.CheckClose(t, "g", rd.g, ref.g, 0, 0)
			}
			// Once a layer changes, the ones after it are no longer clean.
			cur.Layers[0].W[3] = 0
			if e.upstreamClean(cur, 1) || !e.upstreamClean(cur, 0) {
				t.Error("upstreamClean misses a changed layer")
			}
		})
	}
}

// TestECPlusResidualUpdate: e after the in-memory update for a round's
// removals equals e recomputed from scratch with the new weights, and so
// do the sums built from it.
//
// Dense removals go through a matrix product, sparse ones through one
// axpy per weight (the 70-wide layers make 1% sparse enough); with probes
// the products run in float32, hence the looser tolerance there.
func TestECPlusResidualUpdate(t *testing.T) {
	type tcase struct {
		li      int
		density float64
		f32     bool
	}
	var cases []tcase
	for _, li := range []int{0, 1, 2} {
		for _, d := range []float64{0.3, 0.01} {
			for _, f := range []bool{false, true} {
				cases = append(cases, tcase{li, d, f})
			}
		}
	}
	for _, tc := range cases {
		li := tc.li
		t.Run(fmt.Sprintf("layer %d density %g f32 %v", li, tc.density, tc.f32), func(t *testing.T) {
			withLimits(t, 6, 1<<25, 5e7)
			rng := rand.New(rand.NewPCG(uint64(li), 9))
			net := mlp(rng, []int{4, 70, 5, 3}, onnxio.OpTanh, -1)
			data := randData(rng, 19, 4)
			e := setup(t, net, data, Options{Lambda: 1, C: 0.5, Rounds: 2}, analysis.TaskRegression)
			cur := net.Clone()
			if li > 0 {
				damage(cur, rng)
			}
			s, rd := layerSums(t, e, cur, li)
			rel, abs := 1e-12, 1e-12
			if tc.f32 {
				rd.f32 = true
				rd.seal()
				rel, abs = 1e-5, 1e-7
			}
			l := cur.Layers[li]
			var removed []prune.Scored
			for q := range l.W {
				if rng.Float64() < tc.density || q == len(l.W)/2 {
					removed = append(removed, prune.Scored{Pos: q})
				}
			}
			rd.update(removed, l.W, s.shift, l.In, rd.constant(l.In), new([]float64))
			for _, c := range removed {
				l.W[c.Pos] = 0
			}
			s.resetResidual()
			rd.addResidual(s, true)
			fresh, rf := layerSums(t, e, cur, li)
			tol.CheckClose(t, "e", rd.e, rf.e, rel, abs)
			tol.CheckClose(t, "sum g e", s.se, fresh.se, 100*rel, abs)
			tol.CheckClose(t, "sum g e a", s.sea, fresh.sea, 100*rel, abs)

			// Restricted to some rows and columns, sea is the same there
			// and zero elsewhere.
			var rows, cols []int
			for i := 0; i < l.Out; i += 2 {
				rows = append(rows, i)
			}
			for j := 1; j < l.In; j += 2 {
				cols = append(cols, j)
			}
			part := newECPSums(l.Out, l.In)
			rd.addResidualOn(part, true, rows, cols)
			want := make([]float64, len(s.sea))
			for _, i := range rows {
				for _, j := range cols {
					want[i*l.In+j] = s.sea[i*l.In+j]
				}
			}
			tol.CheckClose(t, "sum g e a on a subset", part.sea, want, 100*rel, abs)
			tol.CheckClose(t, "sum g e (subset pass)", part.se, s.se, 0, 0)
		})
	}
}

// TestECPlusLayer prunes one layer and checks the count, the per-row
// quotas, the zeros, and that the final bias makes the g-weighted mean
// residual zero; resident and streamed passes must agree.
func TestECPlusLayer(t *testing.T) {
	cases := []struct {
		name   string
		mem    int
		k      int
		rounds int
		noBias bool
		dead   bool
	}{
		{"resident", 1 << 25, 12, 3, false, false},
		{"streamed", 10, 12, 3, false, false},
		{"one round", 1 << 25, 20, 1, false, false},
		{"more rounds than quota", 1 << 25, 5, 8, false, false},
		{"zero budget", 1 << 25, 0, 4, false, false},
		{"no bias streamed", 10, 15, 4, true, false},
		{"dead neuron", 1 << 25, 12, 2, false, true},
	}
	var residentLayer *onnxio.Layer // the "resident" case's result, for "streamed"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 8, tc.mem, 5e7)
			rng := rand.New(rand.NewPCG(5, 5))
			var nb []int
			if tc.noBias {
				nb = []int{1}
			}
			net := mlp(rng, []int{4, 6, 5, 3}, onnxio.OpTanh, -1, nb...)
			if tc.dead { // neuron 1 of layer 1 never reaches the output
				for o := 0; o < 3; o++ {
					net.Layers[2].W[o*5+1] = 0
				}
			}
			data := randData(rng, 21, 4)
			// Selection only: the reconstruction has its own test.
			eo := Options{Lambda: 1, C: 0.5, Rounds: tc.rounds, Recon: ReconOff}
			e := setup(t, net, data, eo, analysis.TaskRegression)
			cur := net.Clone()
			damage(cur, rng)
			s0, _ := layerSums(t, e, cur, 1)
			l := cur.Layers[1]
			ec := make([]float64, len(l.W))
			for q, w := range l.W {
				ec[q] = w * w * s0.variance(q)
			}
			quota := rowQuotas(ec, l.Out, l.In, tc.k)
			w0 := append([]float64(nil), l.W...)
			res, err := e.pruneLayer(cur, 1, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			if res.resident != (tc.mem > 100) {
				t.Errorf("resident = %v", res.resident)
			}
			if res.removed != tc.k {
				t.Errorf("removed %d, want %d", res.removed, tc.k)
			}
			for i := 0; i < l.Out; i++ {
				n := 0
				for j := 0; j < l.In; j++ {
					q := i*l.In + j
					if res.pruned[q] {
						n++
						if l.W[q] != 0 {
							t.Errorf("w[%d] pruned but %g", q, l.W[q])
						}
					} else if l.W[q] != w0[q] {
						t.Errorf("w[%d] kept but changed from %g to %g", q, w0[q], l.W[q])
					}
				}
				if n != quota[i] {
					t.Errorf("row %d: %d removed, quota %d", i, n, quota[i])
				}
			}
			// The final residual, recomputed from scratch, has zero
			// g-weighted mean in every neuron.
			s, _ := layerSums(t, e, cur, 1)
			for i := 0; i < l.Out; i++ {
				if math.Abs(s.se[i]) > 1e-12*(s.s0[i]+1) {
					t.Errorf("neuron %d: sum g e = %g after the bias, want 0", i, s.se[i])
				}
				if s.s0[i] == 0 && math.Abs(s.e1[i]) > 1e-12 {
					// Where g is zero, the plain mean is zero instead.
					t.Errorf("neuron %d (never reaching the output): sum e = %g, want 0", i, s.e1[i])
				}
			}
			if tc.dead && s.s0[1] != 0 {
				t.Errorf("S0 of the dead neuron = %g", s.s0[1])
			}
			switch tc.name {
			case "resident":
				residentLayer = l
			case "streamed":
				if residentLayer == nil {
					t.Fatal("the resident case did not run")
				}
				tol.CheckClose(t, "W resident vs streamed", l.W, residentLayer.W, 0, 0)
				tol.CheckClose(t, "B resident vs streamed", l.B, residentLayer.B, 1e-9, 1e-12)
			}
		})
	}
}
