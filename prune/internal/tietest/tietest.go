// Package tietest builds a small network with a tied weight for the tests
// of package prune and ec+: one tensor read by a Gemm, a transposed MatMul
// and an embedding Gather.
package tietest

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// Net is a model whose weight E [5,4] is read three ways: a Gemm
// with transB=1 (yA = x E^T + bA, stored [out,in]), a MatMul through an
// Identity (yB = h E + bB, the transposed use, stored [in,out]) and an
// embedding Gather (rows of E at ids). Each use feeds a graph output of
// its own, scaled by a constant, so that their changes add up in the
// squared output change without cross terms, and everything after the
// uses is linear: EC's second-order quantity is then the exact mean
// squared output change, which a brute-force run can check.
func Net(t testing.TB, rng *rand.Rand) *onnxio.Network {
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

// Data feeds x [N,4], h [N,5] and ids [N,3], in batches.
type Data struct{ X, H, IDs []float64 }

// Len is the number of samples.
func (d Data) Len() int { return len(d.X) / 4 }

// Each serves the samples in batches.
func (d Data) Each(batch int, f func(analysis.Batch) error) error {
	for s := 0; s < d.Len(); s += batch {
		e := min(d.Len(), s+batch)
		err := f(analysis.Batch{Start: s, Inputs: []*analysis.Tensor{
			analysis.NewTensor([]int{e - s, 4}, append([]float64(nil), d.X[4*s:4*e]...)),
			analysis.NewTensor([]int{e - s, 5}, append([]float64(nil), d.H[5*s:5*e]...)),
			analysis.NewTensor([]int{e - s, 3}, append([]float64(nil), d.IDs[3*s:3*e]...)),
		}})
		if err != nil {
			return err
		}
	}
	return nil
}

// NewData draws n samples: x around (0, 1, 2, 3), h around -0.3, and
// ids in [0, rows).
func NewData(rng *rand.Rand, n, rows int) Data {
	var d Data
	for s := 0; s < n; s++ {
		for j := 0; j < 4; j++ {
			d.X = append(d.X, rng.NormFloat64()+float64(j))
		}
		for j := 0; j < 5; j++ {
			d.H = append(d.H, rng.NormFloat64()*0.5-0.3)
		}
		for j := 0; j < 3; j++ {
			d.IDs = append(d.IDs, float64(rng.IntN(rows)))
		}
	}
	return d
}

// Inputs are all the samples as one batch.
func (d Data) Inputs() []*analysis.Tensor {
	n := d.Len()
	return []*analysis.Tensor{analysis.NewTensor([]int{n, 4}, d.X), analysis.NewTensor([]int{n, 5}, d.H), analysis.NewTensor([]int{n, 3}, d.IDs)}
}
