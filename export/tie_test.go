package export

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// tiedModel has one 4x4 weight W read three ways: MatMul through an
// Identity (stored [in,out]), MatMul through a Transpose (stored
// [out,in]) and Gemm with transB=1 and a bias (stored [out,in]).
func tiedModel() *pb.ModelProto {
	inits := []*pb.TensorProto{
		onnxio.NewFloatTensor("W", onnxio.Float, []int64{4, 4}, ramp(16, 1)),
		onnxio.NewFloatTensor("c", onnxio.Float, []int64{4}, ramp(4, 0.5)),
	}
	return smallModel(8, 13, onnxio.Float, 4, 4, []*pb.NodeProto{
		node("id", "Identity", []string{"W"}, "Wi"),
		node("mm1", "MatMul", []string{"x", "Wi"}, "h1"),
		node("tr", "Transpose", []string{"W"}, "Wt"),
		node("mm2", "MatMul", []string{"h1", "Wt"}, "h2"),
		node("gemm", "Gemm", []string{"h2", "W", "c"}, "y", &pb.AttributeProto{Name: strPtr("transB"), Type: pb.AttributeProto_INT.Enum(), I: int64Ptr(1)}),
	}, inits, false)
}

func strPtr(s string) *string { return &s }
func int64Ptr(v int64) *int64 { return &v }

// tiedUpdates prunes the stored elements marked in stored (stored order)
// from every use of the tie, each with its own bias shift.
func tiedUpdates(net *onnxio.Network, stored func(k int) bool) []Update {
	var ups []Update
	for _, l := range net.Prunable() {
		w := l.Weights64()
		w = append([]float64(nil), w...)
		for q := range w {
			if stored(l.StoredIndex(q)) {
				w[q] = 0
			}
		}
		b := make([]float64, l.Out)
		for o := range b {
			if l.B != nil {
				b[o] = l.B[o]
			}
			b[o] += 0.125 * float64(o+1+l.MainIdx)
		}
		ups = append(ups, Update{Layer: l, W: w, B: b})
	}
	return ups
}

// TestTiedWeight: the three uses of W form one tie; a consistent pruning
// is written to W once (every node still reads it, through its Identity
// and Transpose), each use gets its own bias, and the rest of the file is
// unchanged. Uses that disagree on W are refused.
func TestTiedWeight(t *testing.T) {
	for _, format := range []Format{Dense, Constant, SparseInitializer} {
		t.Run(string(format), func(t *testing.T) {
			dir := t.TempDir()
			path := writeProto(t, tiedModel(), dir, "in.onnx")
			src, net := load(t, path)
			if len(net.Ties) != 1 || len(net.Ties[0].Layers) != 3 {
				t.Fatalf("ties %v, want one with 3 layers", net.Ties)
			}
			layouts := map[onnxio.Layout]int{}
			for _, l := range net.Layers {
				if !l.Prunable || l.Tie != net.Ties[0] {
					t.Fatalf("layer %s: prunable %v (%s), tie %v", l.Node, l.Prunable, l.Reason, l.Tie)
				}
				layouts[l.WeightLayout]++
			}
			if layouts[onnxio.LayoutInOut] != 1 || layouts[onnxio.LayoutOutIn] != 2 {
				t.Fatalf("layouts %v: want one [in,out] use and two [out,in]", layouts)
			}
			keep := func(k int) bool { return k%3 == 1 }
			ups := tiedUpdates(net, func(k int) bool { return !keep(k) })
			nnz := 0
			for k, v := range ramp(16, 1) {
				if keep(k) && v != 0 {
					nnz++
				}
			}
			res, rs, err := Apply(src, ups, Options{Format: format, AddBias: true})
			if err != nil {
				t.Fatal(err)
			}
			written := 0
			for _, r := range rs {
				if r.TiedWith == "" {
					written++
					if r.NNZ != nnz || r.Size != 16 {
						t.Errorf("result %+v: want %d of 16 non-zeros", r, nnz)
					}
				} else if r.Bytes != 0 {
					t.Errorf("result %+v of a later use counts bytes", r)
				}
			}
			if written != 1 {
				t.Errorf("%d results write the tensor, want 1", written)
			}
			for _, n := range res.Proto.Graph.Node {
				switch n.GetName() {
				case "id", "tr":
					if n.Input[0] != "W" {
						t.Errorf("node %s reads %s, want W", n.GetName(), n.Input[0])
					}
				case "gemm":
					if n.Input[1] != "W" {
						t.Errorf("gemm reads %s, want W", n.Input[1])
					}
				}
			}
			out := filepath.Join(dir, "out.onnx")
			if err := Save(res, out, 0); err != nil {
				t.Fatal(err)
			}
			back := checkRoundTrip(t, out, ups)
			if format == Dense && (len(back.Ties) != 1 || len(back.Ties[0].Layers) != 3) {
				// (A Constant or sparse weight is read back as not an
				// initializer, so as no tie; the node inputs above show
				// that every use still reads the one tensor.)
				t.Fatalf("the tie did not survive: ties %v", back.Ties)
			}
			// The bias-free MatMuls got an Add each, taking over their
			// output names.
			assertUnchangedOutside(t, src.Proto, res.Proto, ups, "mm1", "mm2")
		})
	}
	t.Run("uses disagree", func(t *testing.T) {
		path := writeProto(t, tiedModel(), t.TempDir(), "in.onnx")
		src, net := load(t, path)
		ups := tiedUpdates(net, func(k int) bool { return k%2 == 0 })
		ups[2].W[5] = 0 // one more zero in the last use only
		if _, _, err := Apply(src, ups, Options{AddBias: true}); err == nil || !strings.Contains(err.Error(), "tied weight W") {
			t.Fatalf("error %v, want one about tied weight W", err)
		}
	})
}
