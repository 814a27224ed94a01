package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// TestInspectBundled: the Gemm and MatMul exports of LeNet-300-100 list the
// same three layers with their biases.
func TestInspectBundled(t *testing.T) {
	want := [][2]int{{300, 784}, {100, 300}, {10, 100}}
	for _, name := range []string{"mnist_mlp_gemm.onnx", "mnist_mlp_matmul.onnx"} {
		code, stdout, stderr := runCLI(t, "inspect", "--json", model(name))
		if code != 0 {
			t.Fatal(stderr)
		}
		var r inspectResult
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Layers) != 3 || r.Params != 266200 || !r.Evaluable {
			t.Fatalf("%s: %d layers, %d params, evaluable %v", name, len(r.Layers), r.Params, r.Evaluable)
		}
		for i, l := range r.Layers {
			if l.Out != want[i][0] || l.In != want[i][1] || !l.Bias || !l.Prunable {
				t.Errorf("%s layer %d: %+v", name, i, l)
			}
		}
		code, text, _ := runCLI(t, "inspect", model(name))
		if code != 0 || !strings.Contains(text, "300x784") || !strings.Contains(text, "ir_version 7") {
			t.Errorf("%s: text output %q", name, text)
		}
	}
}

// TestNewerVersionsWarn: an unknown ir_version or opset is a warning on
// stderr, not a refusal.
func TestNewerVersionsWarn(t *testing.T) {
	b, err := os.ReadFile(model("pde_mlp.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	m := &pb.ModelProto{}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
	m.IrVersion = proto.Int64(99)
	m.OpsetImport[0].Version = proto.Int64(99)
	b, _ = proto.Marshal(m)
	p := filepath.Join(t.TempDir(), "future.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "inspect", p)
	if code != 0 || !strings.Contains(stderr, "ir_version 99 is newer") || !strings.Contains(stderr, "opset 99 is newer") || !strings.Contains(stdout, "64x2") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// TestQuantizedModelRefused: pruning a quantized model is bad input with
// advice.
func TestQuantizedModelRefused(t *testing.T) {
	c, ok := testmodelsCase("quantized_matmulinteger_opset13")
	if !ok {
		t.Skip("no quantized test model")
	}
	dir := t.TempDir()
	p, err := c.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "prune", "--quiet", p, "-o", filepath.Join(dir, "out.onnx"), "--calib", data("pde_calib_x.npy"))
	if code != exitBad || !strings.Contains(stderr, "prune before quantizing") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
