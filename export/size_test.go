package export

import (
	"path/filepath"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

func TestCountsAndSizes(t *testing.T) {
	src, net := load(t, realModel(t, "mnist_mlp_gemm.onnx"))
	params, nnz, layers := Counts(net)
	if params != 784*300+300*100+100*10 || len(layers) != 3 || layers[1].Params != 300*100 {
		t.Fatalf("params %d, layers %+v", params, layers)
	}
	if nnz > params || nnz < params*99/100 {
		t.Fatalf("unpruned model has %d non-zeros of %d", nnz, params)
	}
	ups := pruneUpdates(net, 0.9, false)
	wantNNZ := 0
	for _, u := range ups {
		for _, w := range u.W {
			if w != 0 {
				wantNNZ++
			}
		}
	}
	sizes := map[Format]Size{}
	for _, f := range []Format{Dense, Constant} {
		res, _, err := Apply(src, ups, Options{Format: f})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "m.onnx")
		if err := Save(res, out, 0); err != nil {
			t.Fatal(err)
		}
		_, pruned := load(t, out)
		p, n, ls := Counts(pruned)
		if p != params || n != wantNNZ {
			t.Fatalf("%s: %d non-zeros of %d, want %d of %d", f, n, p, wantNNZ, params)
		}
		for _, l := range ls {
			if l.Density < 0.09 || l.Density > 0.11 || l.Density != float64(l.NNZ)/float64(l.Params) {
				t.Fatalf("%s: layer %+v, want density 0.1", f, l)
			}
		}
		s, err := Sizes(out)
		if err != nil {
			t.Fatal(err)
		}
		if s.Disk != fileSize(t, out) || s.Gzip <= 0 || s.Gzip >= s.Disk {
			t.Fatalf("%s: sizes %+v for a %d-byte file", f, s, fileSize(t, out))
		}
		sizes[f] = s
	}
	// 10% density: sparse storage is well under half of dense, and dense
	// zeros compress to well under half too.
	if d, c := sizes[Dense], sizes[Constant]; c.Disk*2 > d.Disk || d.Gzip*2 > d.Disk {
		t.Fatalf("dense %+v, constant %+v", d, c)
	}
	t.Logf("90%% pruned: dense %+v, constant %+v", sizes[Dense], sizes[Constant])

	if _, err := Sizes(filepath.Join(t.TempDir(), "missing.onnx")); err == nil {
		t.Fatal("Sizes of a missing file succeeded")
	}
	if p, n, ls := Counts(&onnxio.Network{}); p != 0 || n != 0 || len(ls) != 0 {
		t.Fatal("empty network has counts")
	}
}
