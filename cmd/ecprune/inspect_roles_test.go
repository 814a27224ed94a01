package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/testmodels"
)

// TestInspectRolesAndAnalysis: inspect names each layer's role and how it
// will be analysed, in JSON and in the text table; a layer behind ArgMax
// uses its local objective and names the op.
func TestInspectRolesAndAnalysis(t *testing.T) {
	vit := filepath.Join("..", "..", "testdata", "zoo", "vit_linear_op13.onnx")
	c, ok := testmodels.ByName("argmax_router_opset13")
	if !ok {
		t.Fatal("no argmax_router_opset13")
	}
	router, err := c.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path     string
		roles    []string
		analysis []string // prefixes
	}{
		{vit, []string{"patch embedding", "attention in-projection (fused)", "attention output projection", "FFN in", "FFN out"},
			[]string{"output-level", "output-level", "output-level", "output-level", "output-level"}},
		{router, []string{"MLP hidden", "dense", "head"},
			[]string{"output-level", "local objective: path to the outputs crosses ArgMax (node /router/ArgMax)", "output-level"}},
	} {
		code, stdout, stderr := runCLI(t, "inspect", "--json", tc.path)
		if code != 0 {
			t.Fatal(stderr)
		}
		var r inspectResult
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatal(err)
		}
		for i, role := range tc.roles {
			l := r.Layers[i]
			if l.Role != role || !strings.HasPrefix(l.Analysis, tc.analysis[i]) {
				t.Errorf("%s layer %d (%s): role %q, analysis %q; want %q, %q", filepath.Base(tc.path), i, l.Name, l.Role, l.Analysis, role, tc.analysis[i])
			}
		}
		code, text, _ := runCLI(t, "inspect", tc.path)
		if code != 0 || !strings.Contains(text, tc.roles[1]) || !strings.Contains(text, tc.analysis[1]) {
			t.Errorf("%s: text output %q", tc.path, text)
		}
	}
}
