package analysis

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// closeSlices reports the largest |a-b| relative to the largest |a| of
// the slice (sums of many terms: rounding scales with their size).
func closeSlices(a, b []float64) float64 {
	scale, worst := 0.0, 0.0
	for q := range a {
		scale = math.Max(scale, math.Abs(a[q]))
		worst = math.Max(worst, math.Abs(a[q]-b[q]))
	}
	if scale == 0 {
		return worst
	}
	return worst / scale
}

// TestMergeShards: Collect on all samples equals Collect on two shards
// merged, in either order (the second order merges a shard whose shift
// differs from the first batch's), to float64 rounding, for every test
// network, both objectives, exact derivatives and gradients; and the
// importances and shifts computed from them agree.
func TestMergeShards(t *testing.T) {
	const n, cut = 29, 11
	for name, build := range bruteNets() {
		for _, objective := range []Objective{ObjOutput, ObjLoss} {
			t.Run(name+"/"+string(objective), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(5, 6))
				net := build(rng)
				per := int(net.Inputs[0].Shape[1])
				x := randSlice(rng, n*per, -1.5, 1.5)
				// Shift the second shard's inputs so its feature means differ.
				for q := cut * per; q < len(x); q++ {
					x[q] += 0.7
				}
				tr := mustRun(t, net, NewTensor([]int{1, per}, x[:per]))
				k := tr.Outputs()[0].Len()
				labels := &Labels{Target: randSlice(rng, n*k, -1, 1), Width: k}
				sub := func(lo, hi int) *Labels {
					return &Labels{Target: labels.Target[lo*k : hi*k], Width: k}
				}
				opt := func(l *Labels) StatsOptions {
					return StatsOptions{Objective: objective, Task: TaskRegression, Labels: l, Grad: true, Batch: 4}
				}
				whole, err := Collect(net, sliceData{x: x, shape: []int{per}}, opt(labels))
				if err != nil {
					t.Fatal(err)
				}
				for _, order := range []string{"first+second", "second+first"} {
					a, err := Collect(net, sliceData{x: x[:cut*per], shape: []int{per}}, opt(sub(0, cut)))
					if err != nil {
						t.Fatal(err)
					}
					b, err := Collect(net, sliceData{x: x[cut*per:], shape: []int{per}}, opt(sub(cut, n)))
					if err != nil {
						t.Fatal(err)
					}
					if order == "second+first" {
						a, b = b, a
					}
					if err := a.Merge(b); err != nil {
						t.Fatal(err)
					}
					if a.N != whole.N || a.Passes != whole.Passes || a.Mode != whole.Mode {
						t.Fatalf("%s: N %d passes %d mode %s, whole %d %d %s", order, a.N, a.Passes, a.Mode, whole.N, whole.Passes, whole.Mode)
					}
					for li, ws := range whole.Layers {
						ms := a.Layers[li]
						// Compare on the whole run's shift: move the merged
						// sums there with an empty merge target.
						onWhole := &LayerStats{Layer: ws.Layer, Shift: ws.Shift,
							S0: make([]float64, len(ws.S0)), S1: make([]float64, len(ws.S1)), S2: make([]float64, len(ws.S2)),
							SumA2: make([]float64, len(ws.SumA2)), GradW: make([]float64, len(ws.GradW))}
						if err := onWhole.Merge(ms); err != nil {
							t.Fatal(err)
						}
						for _, f := range []struct {
							what string
							a, b []float64
						}{{"S0", ws.S0, onWhole.S0}, {"S1", ws.S1, onWhole.S1}, {"S2", ws.S2, onWhole.S2},
							{"SumA2", ws.SumA2, onWhole.SumA2}, {"GradW", ws.GradW, onWhole.GradW}} {
							if d := closeSlices(f.a, f.b); d > 1e-12 {
								t.Errorf("%s layer %d %s: relative difference %.3g", order, li, f.what, d)
							}
						}
						// The importances are shift-free: compare them directly.
						iw, im := ecImportance(ws, whole.N), ecImportance(ms, a.N)
						if d := closeSlices(iw, im); d > 1e-9 {
							t.Errorf("%s layer %d importance: relative difference %.3g", order, li, d)
						}
					}
				}
			})
		}
	}
}

// ecImportance is METHOD.md's I_ij = w_ij^2 / N (S2 - S1^2 / S0).
func ecImportance(ls *LayerStats, n int) []float64 {
	l := ls.Layer
	w := l.Weights64()
	out := make([]float64, len(ls.S1))
	for i := 0; i < l.Out; i++ {
		for j := 0; j < l.In; j++ {
			q := i*l.In + j
			if ls.S0[i] == 0 {
				continue
			}
			out[q] = w[q] * w[q] / float64(n) * (ls.S2[q] - ls.S1[q]*ls.S1[q]/ls.S0[i])
		}
	}
	return out
}

// TestMergeRefuses: statistics of other layers or modes do not merge.
func TestMergeRefuses(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	nets := bruteNets()
	net := nets["softmax"](rng)
	other := nets["activations"](rng)
	x := randSlice(rng, 10*5, -1, 1)
	a, err := Collect(net, sliceData{x: x, shape: []int{5}}, StatsOptions{AD: ADReverse})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := Collect(net, sliceData{x: x, shape: []int{5}}, StatsOptions{AD: ADForward})
	if err != nil {
		t.Fatal(err)
	}
	o, err := Collect(other, sliceData{x: randSlice(rng, 10*4, -1, 1), shape: []int{4}}, StatsOptions{AD: ADReverse})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    *Stats
		want string
	}{{"other derivatives", fwd, "derivatives"}, {"other network", o, "layers"}} {
		if err := a.Merge(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

// TestStatsRoundTrip: WriteTo then ReadStats gives the same statistics,
// and damaged files are refused.
func TestStatsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	nets := bruteNets()
	net := nets["activations"](rng)
	n := 13
	x := randSlice(rng, n*4, -1, 1)
	tr := mustRun(t, net, NewTensor([]int{1, 4}, x[:4]))
	k := tr.Outputs()[0].Len()
	st, err := Collect(net, sliceData{x: x, shape: []int{4}}, StatsOptions{
		Labels: &Labels{Target: randSlice(rng, n*k, -1, 1), Width: k}, Task: TaskRegression, Grad: true, Probes: 1, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	nw, err := st.WriteTo(&buf)
	if err != nil || nw != int64(buf.Len()) {
		t.Fatalf("WriteTo: %d bytes, %v; buffer %d", nw, err, buf.Len())
	}
	got, err := ReadStats(bytes.NewReader(buf.Bytes()), net)
	if err != nil {
		t.Fatal(err)
	}
	if got.N != st.N || got.Passes != st.Passes || got.Mode != st.Mode || got.Objective != st.Objective || len(got.Layers) != len(st.Layers) {
		t.Fatalf("read %+v, wrote %+v", got, st)
	}
	for li, ls := range st.Layers {
		g := got.Layers[li]
		if g.Layer != ls.Layer || g.Op != ls.Op {
			t.Fatalf("layer %d: not matched to the network's", li)
		}
		for _, f := range [][2][]float64{{ls.Shift, g.Shift}, {ls.S0, g.S0}, {ls.S1, g.S1}, {ls.S2, g.S2}, {ls.SumA2, g.SumA2}, {ls.GradW, g.GradW}} {
			if !slices.Equal(f[0], f[1]) {
				t.Fatalf("layer %d: values differ", li)
			}
		}
	}
	b := buf.Bytes()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "unexpected EOF"},
		{"not statistics", []byte("ONNXMODEL and more bytes"), "not an ecprune statistics file"},
		{"truncated", b[:len(b)-3], "unexpected EOF"},
	} {
		if _, err := ReadStats(bytes.NewReader(tc.data), net); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := ReadStats(bytes.NewReader(b), nets["softmax"](rng)); err == nil || !strings.Contains(err.Error(), "layers") {
		t.Errorf("another network: error %v", err)
	}
}
