package analysis

import (
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// TestGCPercent: small models keep Go's default; large ones get a growth
// of about gcSlack over the analysis's live bytes (20 per float32-resident
// weight, 24 per float64 one), rounded, never below 1.
func TestGCPercent(t *testing.T) {
	layer := func(out, in int, f32 bool) *onnxio.Layer {
		l := &onnxio.Layer{Out: out, In: in}
		if f32 {
			l.W32 = []float32{} // only its presence counts here
		} else {
			l.W = []float64{}
		}
		return l
	}
	mlp42M := func(f32 bool) []*onnxio.Layer {
		return []*onnxio.Layer{layer(4096, 1024, f32), layer(4096, 4096, f32), layer(4096, 4096, f32), layer(1024, 4096, f32)}
	}
	tests := []struct {
		name   string
		layers []*onnxio.Layer
		want   int
	}{
		{"no layers", nil, 100},
		{"LeNet-300-100", []*onnxio.Layer{layer(300, 784, true), layer(100, 300, true), layer(10, 100, true)}, 100},
		{"1M float32 weights", []*onnxio.Layer{layer(1024, 1024, true)}, 80},
		{"42M float32 weights", mlp42M(true), 2},
		{"42M float64 weights", mlp42M(false), 2},
		{"1G weights", []*onnxio.Layer{layer(1<<15, 1<<15, true)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := GCPercent(&onnxio.Network{Layers: tt.layers}); got != tt.want {
				t.Errorf("GCPercent = %d, want %d", got, tt.want)
			}
		})
	}
}
