package prune

import (
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// TestSelectLocalPerLayer: under a global scope, a layer scored on its
// local objective meets the sparsity on its own, whatever the scale of
// its scores, while the others share one ranking.
func TestSelectLocalPerLayer(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	net, sc := selNet(rng, [][2]int{{6, 5}, {4, 6}, {3, 4}})
	local := net.Layers[1]
	// Scores far below the others': a global ranking would remove the
	// whole layer first.
	for q := range sc.Layers[1].Score {
		sc.Layers[1].Score[q] = 1e-9 * float64(q)
	}
	for _, withLocal := range []bool{false, true} {
		sc.Local = nil
		if withLocal {
			sc.Local = map[*onnxio.Layer]string{local: "path to the outputs crosses ArgMax"}
		}
		plan, err := Select(net, sc, Options{Sparsity: 0.5, Scope: Global})
		if err != nil {
			t.Fatal(err)
		}
		got := plan.Layers[1].Removed
		want := Count(0.5, local.Params())
		if !withLocal {
			want = local.Params()
		}
		if got != want {
			t.Errorf("local %v: %d of the layer's %d weights removed, want %d", withLocal, got, local.Params(), want)
		}
		if withLocal {
			rest := plan.Layers[0].Removed + plan.Layers[2].Removed
			if w := Count(0.5, net.Layers[0].Params()+net.Layers[2].Params()); rest != w {
				t.Errorf("the other layers lose %d weights, want %d", rest, w)
			}
		}
	}
}
