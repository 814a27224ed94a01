package onnxtestdata

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

func TestDebianCases(t *testing.T) {
	Require(t)
	type tensor struct {
		name string
		dims []int64
	}
	tests := []struct {
		name    string
		inputs  []tensor
		outputs []tensor
	}{
		{"test_relu", []tensor{{"x", []int64{3, 4, 5}}}, []tensor{{"y", []int64{3, 4, 5}}}},
		{"test_gemm_default_vector_bias",
			[]tensor{{"a", []int64{2, 7}}, {"b", []int64{7, 4}}, {"c", []int64{1, 4}}},
			[]tensor{{"y", []int64{2, 4}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Get(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != tc.name || c.ModelPath != filepath.Join(Dir(), tc.name, "model.onnx") {
				t.Errorf("case %q at %q", c.Name, c.ModelPath)
			}
			if len(c.Sets) != 1 {
				t.Fatalf("%d sets, want 1", len(c.Sets))
			}
			check := func(kind string, got []*onnxpb.TensorProto, want []tensor) {
				if len(got) != len(want) {
					t.Fatalf("%d %s, want %d", len(got), kind, len(want))
				}
				for i, w := range want {
					g := got[i]
					if g.GetName() != w.name || !slices.Equal(g.GetDims(), w.dims) || g.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
						t.Errorf("%s %d: %q %v type %d, want %q %v float", kind, i, g.GetName(), g.GetDims(), g.GetDataType(), w.name, w.dims)
					}
					n := int64(1)
					for _, d := range w.dims {
						n *= d
					}
					if int64(len(g.GetRawData())) != 4*n {
						t.Errorf("%s %d: %d raw bytes, want %d", kind, i, len(g.GetRawData()), 4*n)
					}
				}
			}
			check("inputs", c.Sets[0].Inputs, tc.inputs)
			check("outputs", c.Sets[0].Outputs, tc.outputs)
		})
	}
}

func TestDebianCasesByPrefix(t *testing.T) {
	Require(t)
	tests := []struct {
		prefixes []string
		want     []string // names that must be among the results
		min      int
	}{
		{[]string{"test_gemm_"}, []string{"test_gemm_alpha", "test_gemm_default_vector_bias", "test_gemm_transposeB"}, 11},
		{[]string{"test_relu", "test_gemm_default_vector"}, []string{"test_gemm_default_vector_bias", "test_relu"}, 2},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.prefixes, "+"), func(t *testing.T) {
			cases, err := Cases(tc.prefixes...)
			if err != nil {
				t.Fatal(err)
			}
			if len(cases) < tc.min {
				t.Errorf("%d cases, want at least %d", len(cases), tc.min)
			}
			var names []string
			for _, c := range cases {
				names = append(names, c.Name)
				if !slices.ContainsFunc(tc.prefixes, func(p string) bool { return strings.HasPrefix(c.Name, p) }) {
					t.Errorf("case %q matches no prefix", c.Name)
				}
				if len(c.Sets) == 0 {
					t.Errorf("case %q has no test data set", c.Name)
				}
			}
			if !slices.IsSorted(names) {
				t.Errorf("cases not sorted: %v", names)
			}
			for _, w := range tc.want {
				if !slices.Contains(names, w) {
					t.Errorf("%q missing from %v", w, names)
				}
			}
		})
	}
}

// writeTensor writes a float tensor named name holding just v.
func writeTensor(t *testing.T, path, name string, v float32) {
	t.Helper()
	b, err := proto.Marshal(&onnxpb.TensorProto{
		Name: proto.String(name), Dims: []int64{1},
		DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{v},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A made-up folder through $ECPRUNE_ONNX_TESTDATA: sets and files come in
// numeric order (2 before 10), stray entries are ignored.
func TestOrderingAndOverride(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	if Dir() != dir {
		t.Fatalf("Dir() = %q, want %q", Dir(), dir)
	}
	caseDir := filepath.Join(dir, "test_fake")
	setNums := []string{"0", "2", "10"}
	for si, s := range setNums {
		sd := filepath.Join(caseDir, "test_data_set_"+s)
		if err := os.MkdirAll(sd, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, i := range []string{"0", "1", "2", "10", "11"} {
			writeTensor(t, filepath.Join(sd, "input_"+i+".pb"), "in"+i, float32(si))
		}
		writeTensor(t, filepath.Join(sd, "output_0.pb"), "out0", float32(si))
		if err := os.WriteFile(filepath.Join(sd, "notes.txt"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(caseDir, "model.onnx"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "other_case"), 0o755); err != nil {
		t.Fatal(err)
	}

	cases, err := Cases("test_")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) != 1 || cases[0].Name != "test_fake" {
		t.Fatalf("cases %v, want just test_fake", cases)
	}
	c := cases[0]
	if len(c.Sets) != len(setNums) {
		t.Fatalf("%d sets, want %d", len(c.Sets), len(setNums))
	}
	for si, s := range c.Sets {
		var names []string
		for _, in := range s.Inputs {
			names = append(names, in.GetName())
			if got := in.GetFloatData(); len(got) != 1 || got[0] != float32(si) {
				t.Errorf("set %d input %s: data %v, want [%d]", si, in.GetName(), got, si)
			}
		}
		if want := []string{"in0", "in1", "in2", "in10", "in11"}; !slices.Equal(names, want) {
			t.Errorf("set %d inputs %v, want %v", si, names, want)
		}
		if len(s.Outputs) != 1 || s.Outputs[0].GetName() != "out0" {
			t.Errorf("set %d outputs %v", si, s.Outputs)
		}
	}

	// A case folder without model.onnx is an error, not a silent skip.
	if _, err := Get("other_case"); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Get(other_case) error %v, want one wrapping os.ErrNotExist", err)
	}
}

func TestMissingDir(t *testing.T) {
	t.Setenv(EnvDir, filepath.Join(t.TempDir(), "none"))
	if _, err := Cases("test_relu"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Cases error %v, want ErrUnavailable", err)
	}
	if _, err := Get("test_relu"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Get error %v, want ErrUnavailable", err)
	}
}
