package analysis

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels/onnxtestdata"
)

// TestOperatorVectorsSelect runs the ONNX node tests of TopK, IsNaN,
// IsInf and NonZero.
func TestOperatorVectorsSelect(t *testing.T) {
	onnxtestdata.Require(t)
	found := map[string]int{}
	for _, prefix := range []string{"test_top_k", "test_isnan", "test_isinf", "test_nonzero"} {
		cases, err := onnxtestdata.Cases(prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			if tensorVectorSkip(c.Name) {
				continue
			}
			found[prefix]++
			for _, bind := range [][]int{{}, {1}} {
				if prefix != "test_top_k" && len(bind) > 0 {
					continue
				}
				t.Run(fmt.Sprintf("%s/const%v", c.Name, bind), func(t *testing.T) { runVector(t, c, bind) })
			}
		}
	}
	for _, p := range []string{"test_top_k", "test_isnan", "test_isinf", "test_nonzero"} {
		if found[p] == 0 {
			t.Errorf("no vector case %s*", p)
		}
	}
}

// TestSelectKernelDerivatives: TopK's values carry the derivative of the
// elements they copy; its indices, IsNaN, IsInf and NonZero have none.
func TestSelectKernelDerivatives(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	attr := func(axis, largest int) map[string]onnxio.AttrValue {
		return map[string]onnxio.AttrValue{"axis": {Kind: onnxio.AttrIsInt, Int: int64(axis)}, "largest": {Kind: onnxio.AttrIsInt, Int: int64(largest)}}
	}
	for _, c := range []kernelCase{
		{Name: "topk last axis", Op: onnxio.Op{Type: "TopK", Attrs: attr(-1, 1), Outputs: 2}, Ins: []*Tensor{randTensor(rng, -1, 1, 3, 5), intTensor([]int{1}, 2)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "topk smallest axis 0", Op: onnxio.Op{Type: "TopK", Attrs: attr(0, 0), Outputs: 2}, Ins: []*Tensor{randTensor(rng, -1, 1, 4, 3), intTensor([]int{1}, 3)}, Diff: []int{0}, IntIns: []int{1}},
	} {
		t.Run(c.Name, func(t *testing.T) { checkKernel(t, c) })
	}
	for _, typ := range []string{"IsNaN", "IsInf", "NonZero"} {
		if k := kernels[typ]; k == nil || k.JVP != nil {
			t.Errorf("%s: want a kernel without a derivative", typ)
		}
	}
	idx := &onnxio.Op{Kind: onnxio.OpNode, Type: "TopK", OutIndex: 1, OutType: onnxio.Int64, InTypes: []int32{onnxio.Float, onnxio.Int64}}
	if edgeDerivative(idx, 0) {
		t.Error("TopK's indices pass a derivative")
	}
}
