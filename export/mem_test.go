package export

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
)

// TestExternalLocationsInPlace: reading the locations from the file in
// place finds what decoding the model finds, with and without external
// data, and what the in-memory scan finds.
func TestExternalLocationsInPlace(t *testing.T) {
	src, _ := load(t, realModel(t, "mnist_mlp_gemm.onnx"))
	dir := t.TempDir()
	ext := filepath.Join(dir, "ext.onnx")
	if err := src.Save(ext, onnxio.SaveOptions{ExternalThreshold: 1024}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{realModel(t, "mnist_mlp_gemm.onnx"), ext} {
		m, _ := load(t, path)
		got, err := externalLocationsFile(path, true)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		got = slices.Compact(got)
		want := m.ExternalLocations()
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: in place %v, decoded %v", path, got, want)
		}
		b, _ := os.ReadFile(path)
		all, _ := externalLocationsFile(path, false)
		if !slices.Equal(all, externalLocations(b)) {
			t.Errorf("%s: in place %v, in memory %v", path, all, externalLocations(b))
		}
	}
	if _, err := externalLocationsFile(filepath.Join(dir, "missing.onnx"), true); err == nil {
		t.Error("no error for a missing file")
	}
	// Truncated input gives what could be read, without failing.
	b, _ := os.ReadFile(ext)
	for _, n := range []int{0, 1, 7, len(b) / 2, len(b) - 1} {
		externalLocations(b[:n])
	}
}

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

// externalLocations is externalLocationsFile on a serialised model in
// memory: the reference the in-place walk is checked against.
func externalLocations(model []byte) []string {
	return externalLocationsAt(bytes.NewReader(model), int64(len(model)), false)
}
