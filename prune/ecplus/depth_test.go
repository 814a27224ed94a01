package ecplus

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// TestLayerPassCostIndependentOfDepth: one layer's passes (its first pass
// and a residual pass) re-run only that layer from the kept traces, so
// what they allocate does not grow with the number of layers after it.
// A pass that copied each kept trace would allocate a pointer per value
// of the network per batch: 4x more at 4x the depth, quadratic over the
// whole sequential stage.
func TestLayerPassCostIndependentOfDepth(t *testing.T) {
	withLimits(t, 4, 1<<25, 5e7) // 3 batches of 4 samples
	const probe = 5              // the layer measured
	var bytes []uint64
	depths := []int{100, 400}
	for _, depth := range depths {
		rng := rand.New(rand.NewPCG(7, 7))
		sizes := make([]int, depth+1)
		for i := range sizes {
			sizes[i] = 3
		}
		net := mlp(rng, sizes, onnxio.OpRelu, -1)
		data := randData(rng, 12, 3)
		st := collect(t, net, data, analysis.StatsOptions{})
		e, err := newECP(net, data, st, Options{Lambda: 1, C: 0.5, Rounds: 2}, analysis.TaskRegression, t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.origPass(); err != nil {
			t.Fatal(err)
		}
		cur := net.Clone()
		damage(cur, rng) // upstream layers differ from the original: residual passes
		for li := 0; li < probe; li++ {
			if _, err := e.firstPass(cur, li, true, nil); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		if _, err := e.firstPass(cur, probe, true, nil); err != nil {
			t.Fatal(err)
		}
		err = e.layerPass(cur, probe, false, false, func(a, zc, z0, g []float64, rows, _ int) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&m1)
		bytes = append(bytes, m1.TotalAlloc-m0.TotalAlloc)
		if e.prev == nil {
			t.Fatalf("depth %d: no traces kept", depth)
		}
	}
	t.Logf("bytes allocated by layer %d's passes: %d at depth %d, %d at depth %d", probe, bytes[0], depths[0], bytes[1], depths[1])
	if float64(bytes[1]) > 1.5*float64(bytes[0]) {
		t.Errorf("layer %d's passes allocate %d bytes at depth %d, %d at depth %d: the cost of a layer grows with the depth",
			probe, bytes[0], depths[0], bytes[1], depths[1])
	}
}
