package export

import (
	"bytes"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"
)

// TestApplySharesUntouched: the pruned model shares the bytes of the
// tensors it does not change with the source, and the source is
// unchanged.
func TestApplySharesUntouched(t *testing.T) {
	src, net := load(t, realModel(t, "mnist_mlp_gemm.onnx"))
	before, _ := proto.Marshal(src.Proto)
	deep := proto.Clone(src.Proto)
	ups := pruneUpdates(net, 0.5, true)[:1] // the first layer only
	res, _, err := Apply(src, ups, Options{Format: Dense})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := proto.Marshal(src.Proto)
	if !bytes.Equal(before, after) || !proto.Equal(deep, src.Proto) {
		t.Fatal("Apply changed its source")
	}
	shared := 0
	byName := map[string][]byte{}
	for _, x := range src.Proto.Graph.Initializer {
		byName[x.GetName()] = x.RawData
	}
	for _, y := range res.Proto.Graph.Initializer {
		x := byName[y.GetName()]
		if len(x) == 0 || len(y.RawData) == 0 {
			continue
		}
		same := unsafe.SliceData(x) == unsafe.SliceData(y.RawData)
		changed := y.GetName() == ups[0].Layer.WeightInit || y.GetName() == ups[0].Layer.BiasInit
		if same == changed {
			t.Errorf("%s: shares bytes %v, changed %v", y.GetName(), same, changed)
		}
		if same {
			shared++
		}
	}
	if shared == 0 {
		t.Fatal("nothing shared")
	}
}
