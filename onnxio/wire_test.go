package onnxio

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestFileExternalLocations: reading the locations from the file in place
// finds what decoding the model finds, with and without external data,
// and what the walk of the file's bytes in memory finds.
func TestFileExternalLocations(t *testing.T) {
	src, err := Load(bundledPath("mnist_mlp_gemm.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ext := filepath.Join(dir, "ext.onnx")
	if err := src.Save(ext, SaveOptions{ExternalThreshold: 1024}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path    string
		wantExt bool
	}{{bundledPath("mnist_mlp_gemm.onnx"), false}, {ext, true}} {
		m, err := Load(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := FileExternalLocations(tc.path, true)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		got = slices.Compact(got)
		want := m.ExternalLocations()
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: in place %v, decoded %v", tc.path, got, want)
		}
		if (len(got) > 0) != tc.wantExt {
			t.Errorf("%s: locations %v, want some: %v", tc.path, got, tc.wantExt)
		}
		b, _ := os.ReadFile(tc.path)
		all, _ := FileExternalLocations(tc.path, false)
		if mem := externalLocationsAt(bytes.NewReader(b), int64(len(b)), false); !slices.Equal(all, mem) {
			t.Errorf("%s: in place %v, in memory %v", tc.path, all, mem)
		}
	}
	if _, err := FileExternalLocations(filepath.Join(dir, "missing.onnx"), true); err == nil {
		t.Error("no error for a missing file")
	}
	// Truncated input gives what could be read, without failing.
	b, _ := os.ReadFile(ext)
	for _, n := range []int{0, 1, 7, len(b) / 2, len(b) - 1} {
		externalLocationsAt(bytes.NewReader(b[:n]), int64(n), false)
	}
}
