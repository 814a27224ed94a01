package prune

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// tiedNet is a model whose weight E [5,4] is read three ways: a Gemm
// with transB=1 (yA = x E^T + bA, stored [out,in]), a MatMul through an
// Identity (yB = h E + bB, the transposed use, stored [in,out]) and an
// embedding Gather (rows of E at ids). Each use feeds a graph output of
// its own, scaled by a constant, so that their changes add up in the
// squared output change without cross terms, and everything after the
// uses is linear: EC's second-order quantity is then the exact mean
// squared output change, which a brute-force run can check.
func tiedNet(t *testing.T, rng *rand.Rand) *onnxio.Network {
	t.Helper()
	f := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(float32(rng.NormFloat64()))
		}
		return v
	}
	attrInt := func(name string, v int64) *pb.AttributeProto {
		return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
	}
	node := func(name, op string, in []string, out string, attrs ...*pb.AttributeProto) *pb.NodeProto {
		return &pb.NodeProto{Name: proto.String(name), OpType: proto.String(op), Input: in, Output: []string{out}, Attribute: attrs}
	}
	vi := func(name string, elem int32, dims ...int64) *pb.ValueInfoProto {
		s := &pb.TensorShapeProto{Dim: []*pb.TensorShapeProto_Dimension{{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}}}}
		for _, d := range dims {
			s.Dim = append(s.Dim, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
		}
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(elem), Shape: s}}}}
	}
	g := &pb.GraphProto{
		Name: proto.String("tied"),
		Initializer: []*pb.TensorProto{
			onnxio.NewFloatTensor("E", onnxio.Float, []int64{5, 4}, f(20)),
			onnxio.NewFloatTensor("bA", onnxio.Float, []int64{5}, f(5)),
			onnxio.NewFloatTensor("bB", onnxio.Float, []int64{4}, f(4)),
			onnxio.NewFloatTensor("sA", onnxio.Float, []int64{5}, []float64{0.5, -1, 2, 1.5, 0.25}),
			onnxio.NewFloatTensor("sG", onnxio.Float, []int64{}, []float64{3}),
		},
		Node: []*pb.NodeProto{
			node("gemm", "Gemm", []string{"x", "E", "bA"}, "yA", attrInt("transB", 1)),
			node("scaleA", "Mul", []string{"yA", "sA"}, "outA"),
			node("id", "Identity", []string{"E"}, "Ei"),
			node("mm", "MatMul", []string{"h", "Ei"}, "mB"),
			node("add", "Add", []string{"mB", "bB"}, "outB"),
			node("emb", "Gather", []string{"E", "ids"}, "e", attrInt("axis", 0)),
			node("scaleG", "Mul", []string{"e", "sG"}, "outG"),
		},
		Input:  []*pb.ValueInfoProto{vi("x", onnxio.Float, 4), vi("h", onnxio.Float, 5), vi("ids", onnxio.Int64, 3)},
		Output: []*pb.ValueInfoProto{vi("outA", onnxio.Float, 5), vi("outB", onnxio.Float, 4), vi("outG", onnxio.Float, 3, 4)},
	}
	mp := &pb.ModelProto{IrVersion: proto.Int64(8), OpsetImport: []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}}, Graph: g}
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxio.Parse(b, "tied.onnx")
	if err != nil {
		t.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// tiedData feeds x [N,4], h [N,5] and ids [N,3] (row 4 of E is never
// looked up).
type tiedData struct{ x, h, ids []float64 }

func (d tiedData) Len() int { return len(d.x) / 4 }

func (d tiedData) Each(batch int, f func(analysis.Batch) error) error {
	for s := 0; s < d.Len(); s += batch {
		e := min(d.Len(), s+batch)
		err := f(analysis.Batch{Start: s, Inputs: []*analysis.Tensor{
			analysis.NewTensor([]int{e - s, 4}, append([]float64(nil), d.x[4*s:4*e]...)),
			analysis.NewTensor([]int{e - s, 5}, append([]float64(nil), d.h[5*s:5*e]...)),
			analysis.NewTensor([]int{e - s, 3}, append([]float64(nil), d.ids[3*s:3*e]...)),
		}})
		if err != nil {
			return err
		}
	}
	return nil
}

// TestTiedImportanceBruteForce: the importance selection ranks a tied
// element by (the sum over the dense uses of EC's importance plus the
// embedding use's uncompensated one) is, on a network where it is exact,
// the mean squared output change of zeroing the element in every reader
// with each dense use's own optimal bias shift, measured by running the
// network. It is checked for every stored element, with derivatives in
// forward and in reverse mode, and the exact method's measurement of the
// same removal agrees.
func TestTiedImportanceBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 4))
	net := tiedNet(t, rng)
	if len(net.Ties) != 1 {
		t.Fatalf("%d ties, want 1", len(net.Ties))
	}
	tie := net.Ties[0]
	if len(tie.Layers) != 2 || len(tie.Gathers) != 1 || len(tie.Others) != 0 {
		t.Fatalf("tie %+v: want 2 dense uses and 1 Gather", tie)
	}
	if tie.Layers[0].WeightLayout == tie.Layers[1].WeightLayout {
		t.Fatalf("both uses have layout %v: want one transposed", tie.Layers[0].WeightLayout)
	}
	const n = 40
	d := tiedData{}
	for s := 0; s < n; s++ {
		for j := 0; j < 4; j++ {
			d.x = append(d.x, rng.NormFloat64()+float64(j))
		}
		for j := 0; j < 5; j++ {
			d.h = append(d.h, rng.NormFloat64()*0.5-0.3)
		}
		for j := 0; j < 3; j++ {
			d.ids = append(d.ids, float64(rng.IntN(4)))
		}
	}
	inputs := []*analysis.Tensor{analysis.NewTensor([]int{n, 4}, d.x), analysis.NewTensor([]int{n, 5}, d.h), analysis.NewTensor([]int{n, 3}, d.ids)}
	base, err := analysis.Run(net, inputs)
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range []string{analysis.ADForward, analysis.ADReverse} {
		t.Run(ad, func(t *testing.T) {
			st, err := analysis.Collect(net, d, analysis.StatsOptions{AD: ad, Batch: 16})
			if err != nil {
				t.Fatal(err)
			}
			c, err := analysis.CriterionByName("ec")
			if err != nil {
				t.Fatal(err)
			}
			sc, err := c.Score(st, 1)
			if err != nil {
				t.Fatal(err)
			}
			plan := &Plan{}
			for _, ls := range sc.Layers {
				plan.Layers = append(plan.Layers, &LayerPlan{Layer: ls.Layer, Pruned: make([]bool, ls.Layer.Params())})
			}
			var unit *selUnit
			for _, u := range selectionUnits(sc, plan) {
				if u.tie == tie {
					unit = u
				}
			}
			if unit == nil || len(unit.score) != tie.Size() {
				t.Fatal("no selection unit for the tie")
			}
			gatherPart := 0.0
			for k := 0; k < tie.Size(); k++ {
				// Zero element k everywhere; shift each dense use's bias
				// by its own delta*.
				c := net.Clone()
				for li, ls := range sc.Layers {
					l := c.Layers[ls.Layer.Index]
					if l.Tie == nil {
						continue
					}
					w := l.Weights64()
					w = append([]float64(nil), w...)
					for q := range w {
						if l.StoredIndex(q) == k {
							w[q] = 0
							if l.B == nil {
								l.B = make([]float64, l.Out)
							} else {
								l.B = append([]float64(nil), l.B...)
							}
							l.B[q/l.In] += sc.Layers[li].Delta[q]
						}
					}
					l.SetWeights(w)
				}
				mask := make([]bool, tie.Size())
				mask[k] = true
				c.PruneTieGathers(tie, mask)
				tr, err := analysis.Run(c, inputs)
				if err != nil {
					t.Fatal(err)
				}
				var got float64
				for o, y := range tr.Outputs() {
					for q, v := range y.Data {
						dv := v - base.Outputs()[o].Data[q]
						got += dv * dv
					}
				}
				got /= n
				want := unit.score[k]
				if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(got)) {
					t.Errorf("element %d: measured %.12g, predicted %.12g", k, got, want)
				}
				if k/4 == 4 && want != 0 && sc.Ties != nil && sc.Ties[0].Score[k] != 0 {
					t.Errorf("element %d: row 4 is never looked up, its embedding score is %g", k, sc.Ties[0].Score[k])
				}
				if len(sc.Ties) == 1 {
					gatherPart += sc.Ties[0].Score[k]
				}
			}
			if gatherPart == 0 {
				t.Error("the embedding use adds nothing: it is not counted")
			}
			// exact measures the same removal by re-running the network:
			// here it must agree with the prediction.
			ex, err := analysis.Exact(net, d, st, analysis.ExactOptions{Batch: 16, Workers: 2})
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range selectionUnits(ex, plan) {
				if u.tie != tie {
					continue
				}
				for k, v := range u.score {
					if math.Abs(v-unit.score[k]) > 1e-9*math.Max(1, math.Abs(v)) {
						t.Errorf("element %d: exact %.12g, EC %.12g", k, v, unit.score[k])
					}
				}
			}
		})
	}
}
