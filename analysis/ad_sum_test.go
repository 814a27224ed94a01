package analysis

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// TestJVPSum: one pass with seeds on several values (every Dense output of
// the mixed network, including values inside the residual branch) equals
// the sum of one JVP per seed, and mismatched seeds are rejected.
func TestJVPSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	net, tr, from, seeds := denseSeeds(t, rng, 5, 3)
	const p = 3
	cases := []struct {
		name string
		ks   []int // which seeds
	}{
		{"all layers", []int{0, 1, 2, 3, 4}},
		{"later layers only", []int{2, 4}},
		{"out of order", []int{3, 0}},
		{"one", []int{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f []int
			var s []*Tensor
			var want []*Tensor
			for _, k := range c.ks {
				f, s = append(f, from[k]), append(s, seeds[k])
				one, err := JVP(net, tr, from[k], seeds[k])
				if err != nil {
					t.Fatal(err)
				}
				if want == nil {
					for _, o := range one {
						want = append(want, o.Clone())
					}
					continue
				}
				for o := range one {
					addTo(want[o].Data, one[o].Data)
				}
			}
			var before []*Tensor
			for _, sd := range s {
				before = append(before, sd.Clone())
			}
			got, err := JVPSum(net, tr, f, s)
			if err != nil {
				t.Fatal(err)
			}
			for o := range want {
				for q, w := range want[o].Data {
					if d := math.Abs(got[o].Data[q] - w); d > 1e-12*(1+math.Abs(w)) {
						t.Fatalf("output %d [%d] = %.15g, want %.15g", o, q, got[o].Data[q], w)
					}
				}
			}
			for k, sd := range s {
				for q, v := range sd.Data {
					if v != before[k].Data[q] {
						t.Fatal("a seed was modified")
					}
				}
			}
		})
	}
	bad := NewTensor(withP(p+1, tr.Values[from[1]].Shape), nil)
	if _, err := JVPSum(net, tr, from[:2], []*Tensor{seeds[0], bad}); err == nil {
		t.Error("seeds with different direction counts accepted")
	}
	if _, err := JVPSum(net, tr, []int{from[0], from[0]}, []*Tensor{seeds[0], seeds[0]}); err == nil {
		t.Error("a value seeded twice accepted")
	}
}

// TestFloat32Products: JVPSum32 and VJP32 agree with their float64
// versions to float32 rounding.
func TestFloat32Products(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	net, tr, from, seeds := denseSeeds(t, rng, 6, 2)
	const p = 2
	close := func(what string, got, want []float64) {
		t.Helper()
		var scale float64
		for _, w := range want {
			scale = math.Max(scale, math.Abs(w))
		}
		for q, w := range want {
			if d := math.Abs(got[q] - w); d > 1e-5*scale {
				t.Fatalf("%s [%d] = %.9g, want %.9g", what, q, got[q], w)
			}
		}
	}
	j64, err := JVPSum(net, tr, from, seeds)
	if err != nil {
		t.Fatal(err)
	}
	j32, err := JVPSum32(net, tr, from, seeds)
	if err != nil {
		t.Fatal(err)
	}
	for o := range j64 {
		close("JVPSum32", j32[o].Data, j64[o].Data)
	}
	cot := make([]*Tensor, len(net.Outputs))
	for o, id := range net.Outputs {
		y := tr.Values[id]
		cot[o] = NewTensor(withP(p, y.Shape), randSlice(rng, p*y.Len(), -1, 1))
	}
	v64, err := VJP(net, tr, cot, from)
	if err != nil {
		t.Fatal(err)
	}
	v32, err := VJP32(net, tr, cot, from)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range from {
		close("VJP32", v32[id].Data, v64[id].Data)
	}
}

// denseSeeds traces the mixed network on n random samples and draws p
// random tangent directions for the output of each of its Dense ops.
func denseSeeds(t *testing.T, rng *rand.Rand, n, p int) (*onnxio.Network, *Trace, []int, []*Tensor) {
	t.Helper()
	net := mixedNet(rng)
	tr := mustRun(t, net, NewTensor(sh(n, 2, 4), randSlice(rng, n*8, -1.5, 1.5)))
	var from []int
	var seeds []*Tensor
	for i := range net.Ops {
		if net.Ops[i].Layer == nil {
			continue
		}
		z := tr.Values[net.Ops[i].Out]
		from = append(from, net.Ops[i].Out)
		seeds = append(seeds, NewTensor(withP(p, z.Shape), randSlice(rng, p*z.Len(), -1, 1)))
	}
	return net, tr, from, seeds
}
