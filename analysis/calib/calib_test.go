package calib

// The reference files in testdata/ were written by NumPy with
// testdata/gen.py (see the comment at its top); the other test files are
// written in t.TempDir() by SaveNpy, npyio's npz writer, protobuf or by hand.

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"codeberg.org/sbinet/npyio/npy/float16"
	"codeberg.org/sbinet/npyio/npz"
	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

// refValue is the value gen.py stores at C-order flat index i.
func refValue(i int) float64 { return float64(i)*0.25 - 2 }

func refData(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = refValue(i)
	}
	return v
}

func td(name string) string { return filepath.Join("testdata", name) }

func spec(name string, shape ...int64) InputSpec { return InputSpec{Name: name, Shape: shape} }

// readAll reads every batch of src, checking that batches are in order,
// cover every sample exactly once, respect the batch size and carry the
// right shapes; it returns the concatenated inputs.
func readAll(t *testing.T, src *Source) [][]float64 {
	t.Helper()
	out := make([][]float64, len(src.Inputs()))
	next := 0
	for b, err := range src.Batches() {
		if err != nil {
			t.Fatalf("batch at %d: %v", next, err)
		}
		if b.Start != next {
			t.Fatalf("batch starts at %d, want %d", b.Start, next)
		}
		if b.N <= 0 || b.N > src.BatchSize() {
			t.Fatalf("batch of %d samples, batch size %d", b.N, src.BatchSize())
		}
		if len(b.Inputs) != len(out) || len(b.Shapes) != len(out) {
			t.Fatalf("batch has %d inputs / %d shapes, want %d", len(b.Inputs), len(b.Shapes), len(out))
		}
		for k := range out {
			want := append([]int{b.N}, src.SampleShape(k)...)
			if !slices.Equal(b.Shapes[k], want) {
				t.Fatalf("input %d: batch shape %v, want %v", k, b.Shapes[k], want)
			}
			n, _ := numElems(want)
			if len(b.Inputs[k]) != n {
				t.Fatalf("input %d: %d values for shape %v", k, len(b.Inputs[k]), want)
			}
			out[k] = append(out[k], b.Inputs[k]...)
		}
		next += b.N
	}
	if next != src.N() {
		t.Fatalf("batches covered %d samples, want %d", next, src.N())
	}
	return out
}

func mustOpen(t *testing.T, paths []string, specs []InputSpec, opt Options) *Source {
	t.Helper()
	src, err := Open(paths, specs, opt)
	if err != nil {
		t.Fatalf("Open(%v): %v", paths, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func writePb(t *testing.T, dir, name string, tp *onnxpb.TensorProto) string {
	t.Helper()
	b, err := proto.Marshal(tp)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// npyBytes builds a .npy file by hand (version 1.0) for odd cases.
func npyBytes(dict string, data []byte) []byte {
	var b bytes.Buffer
	b.Write(npyMagic)
	b.Write([]byte{1, 0})
	binary.Write(&b, binary.LittleEndian, uint16(len(dict)+1))
	b.WriteString(dict)
	b.WriteByte('\n')
	b.Write(data)
	return b.Bytes()
}

func f32Bytes(v []float64) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(x)))
	}
	return b
}

func i32s(v []float64, f func(float64) int32) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = f(x)
	}
	return out
}

func TestReadFormats(t *testing.T) {
	dir := t.TempDir()
	ref := refData(36)
	ref32 := make([]float32, 36)
	ref16 := make([]byte, 72)
	for i, v := range ref {
		ref32[i] = float32(v)
		binary.LittleEndian.PutUint16(ref16[2*i:], float16.New(float32(v)).Uint16())
	}
	u1 := make([]float64, 36)
	for i := range u1 {
		u1[i] = float64(i * 7 % 256)
	}
	// Go-written .npz: npyio stores entries without the ".npy" suffix.
	goNpz := filepath.Join(dir, "go.npz")
	if err := npz.Write(goNpz, map[string]any{
		"a": nest(reflect.ValueOf(ref32), []int{6, 2, 3}).Interface(),
		"b": nest(reflect.ValueOf(ref), []int{6, 6}).Interface(),
	}); err != nil {
		t.Fatal(err)
	}
	goNpy := filepath.Join(dir, "go.npy")
	if err := SaveNpy(goNpy, ref, []int{6, 2, 3}, false); err != nil {
		t.Fatal(err)
	}
	dims := []int64{6, 2, 3}
	f32 := int32(onnxpb.TensorProto_FLOAT)
	f64 := int32(onnxpb.TensorProto_DOUBLE)
	f16 := int32(onnxpb.TensorProto_FLOAT16)
	ui8 := int32(onnxpb.TensorProto_UINT8)
	pbRaw := writePb(t, dir, "raw.pb", &onnxpb.TensorProto{Dims: dims, DataType: &f32, RawData: f32Bytes(ref)})
	pbFloat := writePb(t, dir, "float.pb", &onnxpb.TensorProto{Dims: dims, DataType: &f32, FloatData: ref32})
	pbDouble := writePb(t, dir, "double.pb", &onnxpb.TensorProto{Dims: dims, DataType: &f64, DoubleData: ref})
	pbU8 := writePb(t, dir, "u8.pb", &onnxpb.TensorProto{Dims: dims, DataType: &ui8,
		Int32Data: i32s(u1, func(x float64) int32 { return int32(x) })})
	pbF16Raw := writePb(t, dir, "f16raw.pb", &onnxpb.TensorProto{Dims: dims, DataType: &f16, RawData: ref16})
	pbF16 := writePb(t, dir, "f16.pb", &onnxpb.TensorProto{Dims: dims, DataType: &f16,
		Int32Data: i32s(ref, func(x float64) int32 { return int32(float16.New(float32(x)).Uint16()) })})

	tests := []struct {
		name   string
		paths  []string
		specs  []InputSpec
		sample [][]int     // expected per-sample shapes
		want   [][]float64 // expected values, per input
	}{
		{"npy f4", []string{td("f4.npy")}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy f8", []string{td("f8.npy")}, []InputSpec{spec("x", 0, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy f2", []string{td("f2.npy")}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy big endian", []string{td("f4_be.npy")}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy fortran 3d", []string{td("f4_fortran.npy")}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy fortran 2d", []string{td("f8_fortran_2d.npy")}, []InputSpec{spec("x", -1, 6)}, [][]int{{6}}, [][]float64{ref}},
		{"npy version 2", []string{td("f4_v2.npy")}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy uint8 unscaled", []string{td("u1.npy")}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{u1}},
		{"npy flat reshaped", []string{td("f4_flat.npy")}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy flattened", []string{td("f4.npy")}, []InputSpec{spec("x", -1, 6)}, [][]int{{6}}, [][]float64{ref}},
		{"npy unit axis added", []string{td("f4.npy")}, []InputSpec{spec("x", -1, 1, 2, 3)}, [][]int{{1, 2, 3}}, [][]float64{ref}},
		{"npy dynamic inferred", []string{td("f4_flat.npy")}, []InputSpec{spec("x", -1, -1, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy unknown shape", []string{td("f4.npy")}, []InputSpec{spec("x")}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy fixed batch dim", []string{td("f4.npy")}, []InputSpec{spec("x", 1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npy written by SaveNpy", []string{goNpy}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npz numpy keyed", []string{td("multi.npz")}, []InputSpec{spec("b", -1, 6), spec("a", -1, 2, 3)},
			[][]int{{6}, {2, 3}}, [][]float64{ref, ref}},
		{"npz numpy compressed", []string{td("multi_c.npz")}, []InputSpec{spec("a", -1, 2, 3), spec("b", -1, 2, 3)},
			[][]int{{2, 3}, {2, 3}}, [][]float64{ref, ref}},
		{"npz go keyed", []string{goNpz}, []InputSpec{spec("a", -1, 2, 3), spec("b", -1, 6)},
			[][]int{{2, 3}, {6}}, [][]float64{ref, ref}},
		{"npz single array any key", []string{td("one.npz")}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npz single input by key", []string{td("multi.npz")}, []InputSpec{spec("a", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"npz go single input by key", []string{goNpz}, []InputSpec{spec("b", -1, 6)}, [][]int{{6}}, [][]float64{ref}},
		{"two files", []string{td("f4.npy"), td("u1.npy")}, []InputSpec{spec("x", -1, 2, 3), spec("y", -1, 6)},
			[][]int{{2, 3}, {6}}, [][]float64{ref, u1}},
		{"pb raw float", []string{pbRaw}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"pb float_data", []string{pbFloat}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"pb double_data", []string{pbDouble}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"pb uint8 int32_data", []string{pbU8}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{u1}},
		{"pb float16 raw", []string{pbF16Raw}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
		{"pb float16 int32_data", []string{pbF16}, []InputSpec{spec("x", -1, 2, 3)}, [][]int{{2, 3}}, [][]float64{ref}},
	}
	for _, tc := range tests {
		for _, batch := range []int{1, 4, 6, 100} {
			t.Run(fmt.Sprintf("%s/batch%d", tc.name, batch), func(t *testing.T) {
				src := mustOpen(t, tc.paths, tc.specs, Options{Batch: batch})
				if src.N() != 6 {
					t.Fatalf("N = %d, want 6", src.N())
				}
				for k := range tc.sample {
					if got := src.SampleShape(k); !slices.Equal(got, tc.sample[k]) {
						t.Fatalf("input %d sample shape %v, want %v", k, got, tc.sample[k])
					}
				}
				got := readAll(t, src)
				for k := range tc.want {
					if !slices.Equal(got[k], tc.want[k]) {
						t.Fatalf("input %d values\n got %v\nwant %v", k, got[k], tc.want[k])
					}
				}
				// Batches is re-iterable.
				again := readAll(t, src)
				if !reflect.DeepEqual(again, got) {
					t.Fatal("second pass differs from the first")
				}
				if w := src.Warnings(); len(w) != 0 && !strings.Contains(tc.name, "single input") {
					t.Fatalf("unexpected warnings %q", w)
				}
			})
		}
	}
}

func TestDefaultBatchAndReadBatch(t *testing.T) {
	src := mustOpen(t, []string{td("f4.npy")}, []InputSpec{spec("x", -1, 2, 3)}, Options{})
	if src.BatchSize() != DefaultBatch {
		t.Fatalf("batch size %d, want %d", src.BatchSize(), DefaultBatch)
	}
	b, err := src.ReadBatch(2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if b.Start != 2 || b.N != 3 || !slices.Equal(b.Inputs[0], refData(36)[12:30]) {
		t.Fatalf("ReadBatch(2,3) = start %d n %d %v", b.Start, b.N, b.Inputs[0])
	}
	for _, r := range [][2]int{{-1, 1}, {5, 2}, {0, 7}, {7, 0}} {
		if _, err := src.ReadBatch(r[0], r[1]); err == nil {
			t.Errorf("ReadBatch(%d, %d) succeeded", r[0], r[1])
		}
	}
	w := src.WithBatch(4)
	if w.BatchSize() != 4 || w.N() != 6 || src.BatchSize() != DefaultBatch {
		t.Fatal("WithBatch changed the wrong thing")
	}
	got := readAll(t, w)
	if !slices.Equal(got[0], refData(36)) {
		t.Fatal("WithBatch values differ")
	}
}

func TestResolveSample(t *testing.T) {
	tests := []struct {
		decl []int64
		data []int
		want []int // nil = error
		msg  string
	}{
		{[]int64{-1, 784}, []int{10, 784}, []int{784}, ""},
		{[]int64{-1, 1, 28, 28}, []int{10, 784}, []int{1, 28, 28}, ""},
		{[]int64{-1, 1, 28, 28}, []int{10, 28, 28}, []int{1, 28, 28}, ""},
		{[]int64{-1, 784}, []int{10, 28, 28}, []int{784}, ""},
		{[]int64{-1, 784}, []int{10, 1, 28, 28}, []int{784}, ""},
		{[]int64{-1, 28, 28}, []int{10, 28, 28, 1}, []int{28, 28}, ""},
		{[]int64{-1, 3, 32, 32}, []int{10, 32, 32, 3}, nil, "ambiguous"},
		{[]int64{-1, 784}, []int{10, 785}, nil, "expected N x 784 (per sample 784), got 10 x 785"},
		{[]int64{-1, 1, 28, 28}, []int{10, 1, 28, 27}, nil, "got 10 x 1 x 28 x 27"},
		{[]int64{-1, -1, 28}, []int{10, 280}, []int{10, 28}, ""},
		{[]int64{-1, -1, 28}, []int{10, 281}, nil, "expected N x ? x 28"},
		{[]int64{-1, -1, -1}, []int{10, 280}, nil, "expected"},
		{[]int64{-1, -1, -1}, []int{10, 5, 7}, []int{5, 7}, ""},
		{[]int64{0, 3, 0}, []int{10, 3, 9}, []int{3, 9}, ""},
		{[]int64{-1, 1, -1, 28}, []int{10, 5, 28}, []int{1, 5, 28}, ""},
		{[]int64{-1, 1, -1, 28}, []int{10, 5, 27}, nil, "expected N x 1 x ? x 28"},
		{[]int64{-1}, []int{10}, []int{}, ""},
		{[]int64{-1}, []int{10, 1}, []int{}, ""},
		{[]int64{-1, 1}, []int{10}, []int{1}, ""},
		{[]int64{-1, -1}, []int{10}, []int{1}, ""},
		{nil, []int{10, 4, 4}, []int{4, 4}, ""},
		{[]int64{1, 2}, []int{10, 2}, []int{2}, ""},
	}
	for _, tc := range tests {
		got, err := resolveSample(tc.decl, tc.data)
		if tc.want == nil {
			if err == nil {
				t.Errorf("resolveSample(%v, %v) = %v, want error", tc.decl, tc.data, got)
			} else if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("resolveSample(%v, %v) error %q, want it to contain %q", tc.decl, tc.data, err, tc.msg)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("resolveSample(%v, %v) = %v, %v; want %v", tc.decl, tc.data, got, err, tc.want)
		}
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	good := npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f32Bytes(refData(6)))
	inf := refData(6)
	inf[4] = math.Inf(-1)
	infPath := filepath.Join(dir, "inf.npy")
	if err := SaveNpy(infPath, inf, []int{3, 2}, false); err != nil {
		t.Fatal(err)
	}
	five := filepath.Join(dir, "five.npy")
	if err := SaveNpy(five, refData(30), []int{5, 2, 3}, true); err != nil {
		t.Fatal(err)
	}
	str := int32(onnxpb.TensorProto_STRING)
	f32 := int32(onnxpb.TensorProto_FLOAT)
	ext := onnxpb.TensorProto_EXTERNAL

	x23 := []InputSpec{spec("x", -1, 2, 3)}
	tests := []struct {
		name  string
		paths []string
		specs []InputSpec
		file  string // file the error must name (default paths[0])
		msg   []string
	}{
		{"missing file", []string{filepath.Join(dir, "nope.npy")}, x23, "", []string{"cannot open", "no such file"}},
		{"directory", []string{dir + "/sub.npy"}, x23, "", []string{"directory"}},
		{"empty file", []string{writeFile(t, dir, "empty.npy", nil)}, x23, "", []string{"empty file"}},
		{"bad magic", []string{writeFile(t, dir, "magic.npy", []byte("PK\x03\x04not numpy at all"))}, x23, "", []string{"not a .npy file"}},
		{"truncated magic", []string{writeFile(t, dir, "tmagic.npy", []byte("\x93NUM"))}, x23, "", []string{"truncated"}},
		{"truncated header", []string{writeFile(t, dir, "thdr.npy", good[:30])}, x23, "", []string{"truncated .npy header"}},
		{"truncated data", []string{writeFile(t, dir, "tdata.npy", good[:len(good)-3])}, x23, "", []string{"truncated .npy file", "needs"}},
		{"bad version", []string{writeFile(t, dir, "ver.npy", append([]byte("\x93NUMPY\x09\x00"), good[8:]...))}, x23, "", []string{"version 9.0"}},
		{"huge header", []string{writeFile(t, dir, "huge.npy", []byte("\x93NUMPY\x02\x00\xff\xff\xff\xff"))}, x23, "", []string{"too large"}},
		{"garbage header", []string{writeFile(t, dir, "garb.npy", npyBytes("{'descr': <f4", nil))}, x23, "", []string{"bad .npy header"}},
		{"missing key", []string{writeFile(t, dir, "nokey.npy", npyBytes("{'descr': '<f4', 'shape': (2,3)}", nil))}, x23, "", []string{"missing key 'fortran_order'"}},
		{"negative dim", []string{writeFile(t, dir, "neg.npy", npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3)}", nil))}, x23, "", []string{"bad dimension"}},
		{"overflowing shape", []string{writeFile(t, dir, "ovf.npy", npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776)}", nil))}, x23, "", []string{"too large"}},
		{"scalar array", []string{writeFile(t, dir, "scalar.npy", npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': ()}", f32Bytes([]float64{1})))}, x23, "", []string{"scalar"}},
		{"zero samples", []string{writeFile(t, dir, "zero.npy", npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2, 3)}", nil))}, x23, "", []string{"no samples"}},
		{"int16", []string{td("i2.npy")}, []InputSpec{spec("x", -1, 3)}, "", []string{"unsupported dtype int16", `"<i2"`}},
		{"complex64", []string{td("c8.npy")}, []InputSpec{spec("x", -1, 3)}, "", []string{"unsupported dtype complex64"}},
		{"object", []string{td("obj.npy")}, []InputSpec{spec("x", -1)}, "", []string{`unsupported dtype "|O"`}},
		{"structured", []string{td("struct.npy")}, []InputSpec{spec("x", -1)}, "", []string{"structured"}},
		{"shape mismatch", []string{td("f4.npy")}, []InputSpec{spec("x", -1, 3, 3)}, "", []string{`input "x"`, "expected N x 3 x 3", "got 6 x 2 x 3"}},
		{"ambiguous reshape", []string{td("f4.npy")}, []InputSpec{spec("x", -1, 3, 2)}, "", []string{"expected N x 3 x 2", "got 6 x 2 x 3", "ambiguous"}},
		{"nan", []string{td("nan.npy")}, x23, "", []string{"sample 4", "NaN", "index 1, 2)"}},
		{"inf", []string{infPath}, []InputSpec{spec("x", -1, 2)}, "", []string{"sample 2", "Inf"}},
		{"sample count mismatch", []string{td("f4.npy"), five}, []InputSpec{spec("x", -1, 2, 3), spec("y", -1, 2, 3)}, five,
			[]string{"5 samples", td("f4.npy") + " has 6"}},
		{"too few files", []string{td("f4.npy")}, []InputSpec{spec("x", -1, 2, 3), spec("y", -1, 2, 3)}, "", []string{`"x", "y"`, ".npz"}},
		{"too many files", []string{td("f4.npy"), td("f8.npy")}, x23, "", []string{"2 data files", "1 input"}},
		{"npz missing key", []string{td("multi.npz")}, []InputSpec{spec("a", -1, 2, 3), spec("c", -1, 6)}, "", []string{`no array for graph input "c"`, `"a", "b"`}},
		{"npz ambiguous single input", []string{td("multi.npz")}, x23, "", []string{`no array named "x"`, `"a", "b"`}},
		{"npz shape mismatch", []string{td("multi.npz")}, []InputSpec{spec("a", -1, 2, 3), spec("b", -1, 7)}, "", []string{`array "b"`, "expected N x 7"}},
		{"npz not a zip", []string{writeFile(t, dir, "bad.npz", []byte("hello"))}, x23, "", []string{"not a valid .npz"}},
		{"npz truncated member", []string{writeFile(t, dir, "trunc.npz", truncNpz(t))}, x23, "", []string{`array "x"`, "truncated"}},
		{"pb garbage", []string{writeFile(t, dir, "bad.pb", []byte{0xff, 0xff, 0xff})}, x23, "", []string{"not a valid ONNX TensorProto"}},
		{"pb string type", []string{writePb(t, dir, "str.pb", &onnxpb.TensorProto{Dims: []int64{2, 3}, DataType: &str})}, x23, "", []string{"unsupported TensorProto data type STRING"}},
		{"pb raw length", []string{writePb(t, dir, "rawlen.pb", &onnxpb.TensorProto{Dims: []int64{2, 3}, DataType: &f32, RawData: []byte{1, 2, 3}})}, x23, "", []string{"raw_data has 3 bytes"}},
		{"pb value count", []string{writePb(t, dir, "cnt.pb", &onnxpb.TensorProto{Dims: []int64{2, 3}, DataType: &f32, FloatData: []float32{1}})}, x23, "", []string{"holds 1 values"}},
		{"pb external", []string{writePb(t, dir, "ext.pb", &onnxpb.TensorProto{Dims: []int64{2, 3}, DataType: &f32, DataLocation: &ext})}, x23, "", []string{"external data"}},
		{"unknown type", []string{writeFile(t, dir, "data.bin", []byte("0123456789"))}, x23, "", []string{"unknown data file type"}},
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.npy"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := Open(tc.paths, tc.specs, Options{Batch: 2})
			if err == nil {
				src.Close()
				t.Fatal("Open succeeded")
			}
			var de *DataError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %q is not a *DataError", err, err)
			}
			file := tc.file
			if file == "" {
				file = tc.paths[0]
			}
			if de.File != file || !strings.HasPrefix(err.Error(), file+": ") {
				t.Fatalf("error %q names file %q, want %q", err, de.File, file)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans several lines", err)
			}
		})
	}
}

// truncNpz makes an .npz whose member "x.npy" declares more data than it
// has (npyio cannot write such a member, so the zip is built directly).
func truncNpz(t *testing.T) []byte {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	m, err := w.Create("x.npy")
	if err != nil {
		t.Fatal(err)
	}
	m.Write(npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6, 2, 3)}", make([]byte, 10)))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestOptionErrors(t *testing.T) {
	x := []InputSpec{spec("x", -1, 2, 3)}
	for _, tc := range []struct {
		paths []string
		specs []InputSpec
		opt   Options
	}{
		{[]string{td("f4.npy")}, x, Options{Batch: -1}},
		{[]string{td("f4.npy")}, x, Options{Limit: -1}},
		{[]string{td("f4.npy")}, nil, Options{}},
		{nil, x, Options{}},
		{[]string{td("f4.npy"), td("f4.npy")}, []InputSpec{spec("x"), spec("x")}, Options{}},
	} {
		_, err := Open(tc.paths, tc.specs, tc.opt)
		var de *DataError
		if !errors.As(err, &de) {
			t.Errorf("Open(%v, %v, %+v) = %v, want a *DataError", tc.paths, tc.specs, tc.opt, err)
		}
	}
}

func TestLimitAndWarnings(t *testing.T) {
	x := []InputSpec{spec("x", -1, 2, 3)}
	src := mustOpen(t, []string{td("f4.npy")}, x, Options{Batch: 3, Limit: 4})
	if src.N() != 4 {
		t.Fatalf("N = %d, want 4", src.N())
	}
	if got := readAll(t, src); !slices.Equal(got[0], refData(24)) {
		t.Fatalf("limited values %v", got[0])
	}
	if len(src.Warnings()) != 0 {
		t.Fatalf("warnings %q", src.Warnings())
	}

	var called []string
	src = mustOpen(t, []string{td("f4.npy")}, x, Options{Limit: 10, Warn: func(s string) { called = append(called, s) }})
	if src.N() != 6 {
		t.Fatalf("N = %d, want 6", src.N())
	}
	w := src.Warnings()
	if len(w) != 1 || !slices.Equal(w, called) || !strings.Contains(w[0], "only 6 samples") || !strings.Contains(w[0], "10") ||
		!strings.HasPrefix(w[0], td("f4.npy")+": ") {
		t.Fatalf("warnings %q, callback got %q", w, called)
	}

	// Unused .npz arrays are a warning, not an error.
	src = mustOpen(t, []string{td("multi.npz")}, []InputSpec{spec("a", -1, 2, 3)}, Options{})
	if w := src.Warnings(); len(w) != 1 || !strings.Contains(w[0], `"b"`) {
		t.Fatalf("npz warnings %q", w)
	}
}

func TestSplit(t *testing.T) {
	x := []InputSpec{spec("x", -1, 2, 3)}
	src := mustOpen(t, []string{td("f4.npy")}, x, Options{Batch: 4})
	ref := refData(36)
	rowsOf := func(s *Source) []int {
		var r []int
		for i := range s.N() {
			r = append(r, s.Row(i))
		}
		return r
	}
	valuesOf := func(rows []int) []float64 {
		var v []float64
		for _, r := range rows {
			v = append(v, ref[r*6:(r+1)*6]...)
		}
		return v
	}
	for _, tc := range []struct {
		frac       float64
		calib, out []int
	}{
		{0.34, []int{0, 1, 2, 3}, []int{4, 5}}, // floor(6*0.34) = 2
		{0.5, []int{0, 1, 2}, []int{3, 4, 5}},
		{0.1, []int{0, 1, 2, 3, 4, 5}, nil},
		{0, []int{0, 1, 2, 3, 4, 5}, nil},
		{-1, []int{0, 1, 2, 3, 4, 5}, nil},
		{math.NaN(), []int{0, 1, 2, 3, 4, 5}, nil},
		{1, nil, []int{0, 1, 2, 3, 4, 5}},
		{7, nil, []int{0, 1, 2, 3, 4, 5}},
	} {
		c, h := src.Split(tc.frac, 0)
		if !slices.Equal(rowsOf(c), tc.calib) || !slices.Equal(rowsOf(h), tc.out) {
			t.Errorf("Split(%v, 0) rows %v / %v, want %v / %v", tc.frac, rowsOf(c), rowsOf(h), tc.calib, tc.out)
			continue
		}
		if got := readAll(t, c); !slices.Equal(got[0], valuesOf(tc.calib)) {
			t.Errorf("Split(%v, 0) calib values %v", tc.frac, got[0])
		}
		if got := readAll(t, h); !slices.Equal(got[0], valuesOf(tc.out)) {
			t.Errorf("Split(%v, 0) holdout values %v", tc.frac, got[0])
		}
	}

	// Seeded: deterministic, disjoint, complete, ordered.
	c1, h1 := src.Split(0.5, 42)
	c2, h2 := src.Split(0.5, 42)
	if !slices.Equal(rowsOf(c1), rowsOf(c2)) || !slices.Equal(rowsOf(h1), rowsOf(h2)) {
		t.Fatal("seeded split is not deterministic")
	}
	if h1.N() != 3 || c1.N() != 3 {
		t.Fatalf("seeded split sizes %d / %d", c1.N(), h1.N())
	}
	all := append(rowsOf(c1), rowsOf(h1)...)
	slices.Sort(all)
	if !slices.Equal(all, []int{0, 1, 2, 3, 4, 5}) || !slices.IsSorted(rowsOf(c1)) || !slices.IsSorted(rowsOf(h1)) {
		t.Fatalf("seeded split rows %v / %v", rowsOf(c1), rowsOf(h1))
	}
	if got := readAll(t, h1); !slices.Equal(got[0], valuesOf(rowsOf(h1))) {
		t.Fatalf("seeded holdout values %v for rows %v", got[0], rowsOf(h1))
	}
	// Fortran-ordered data read through a scattered view.
	fsrc := mustOpen(t, []string{td("f4_fortran.npy")}, x, Options{Batch: 2})
	fc, fh := fsrc.Split(0.5, 42)
	if !slices.Equal(rowsOf(fh), rowsOf(h1)) {
		t.Fatalf("same seed, different rows: %v vs %v", rowsOf(fh), rowsOf(h1))
	}
	if got := readAll(t, fh); !slices.Equal(got[0], valuesOf(rowsOf(fh))) {
		t.Fatalf("fortran holdout values %v for rows %v", got[0], rowsOf(fh))
	}
	if got := readAll(t, fc); !slices.Equal(got[0], valuesOf(rowsOf(fc))) {
		t.Fatalf("fortran calib values %v for rows %v", got[0], rowsOf(fc))
	}
	// Splitting a split, and labels follow the view.
	cc, hh := c1.Split(0.34, 0)
	if !slices.Equal(rowsOf(hh), rowsOf(c1)[2:]) || !slices.Equal(rowsOf(cc), rowsOf(c1)[:2]) {
		t.Fatalf("split of split %v / %v from %v", rowsOf(cc), rowsOf(hh), rowsOf(c1))
	}
	l, err := h1.LoadLabels(td("i8_labels.npy"))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rowsOf(h1) {
		if l.Class[i] != r%3 {
			t.Fatalf("holdout label %d = %d, want %d", i, l.Class[i], r%3)
		}
	}
	// A different seed over many samples picks a different subset.
	big := filepath.Join(t.TempDir(), "big.npy")
	if err := SaveNpy(big, make([]float64, 200), []int{100, 2}, true); err != nil {
		t.Fatal(err)
	}
	bs := mustOpen(t, []string{big}, []InputSpec{spec("x", -1, 2)}, Options{})
	_, ha := bs.Split(0.2, 1)
	_, hb := bs.Split(0.2, 2)
	if ha.N() != 20 || hb.N() != 20 || slices.Equal(rowsOf(ha), rowsOf(hb)) {
		t.Fatalf("seeds 1 and 2 give %v and %v", rowsOf(ha), rowsOf(hb))
	}
}

func TestLabels(t *testing.T) {
	dir := t.TempDir()
	i4 := filepath.Join(dir, "i4.npy")
	writeFile(t, dir, "i4.npy", npyBytes("{'descr': '<i4', 'fortran_order': False, 'shape': (3,)}", []byte{2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0}))
	neg := writeFile(t, dir, "neg.npy", npyBytes("{'descr': '<i4', 'fortran_order': False, 'shape': (2,)}", []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}))
	nanT := filepath.Join(dir, "nan.npy")
	if err := SaveNpy(nanT, []float64{1, math.NaN(), 3}, []int{3}, false); err != nil {
		t.Fatal(err)
	}
	i64 := int32(onnxpb.TensorProto_INT64)
	pbLab := writePb(t, dir, "lab.pb", &onnxpb.TensorProto{Dims: []int64{4}, DataType: &i64, Int64Data: []int64{3, 1, 0, 2}})

	tests := []struct {
		path   string
		n      int
		class  []int
		target []float64
		shape  []int
	}{
		{td("i8_labels.npy"), 6, []int{0, 1, 2, 0, 1, 2}, []float64{0, 1, 2, 0, 1, 2}, []int{}},
		{td("u1_labels.npy"), 6, []int{0, 1, 2, 0, 1, 2}, []float64{0, 1, 2, 0, 1, 2}, []int{}},
		{td("f4_targets.npy"), 6, nil, []float64{0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5}, []int{2}},
		{i4, 3, []int{2, 0, 7}, []float64{2, 0, 7}, []int{}},
		{i4, -1, []int{2, 0, 7}, []float64{2, 0, 7}, []int{}},
		{pbLab, 4, []int{3, 1, 0, 2}, []float64{3, 1, 0, 2}, []int{}},
		{td("f8_fortran_2d.npy"), 6, nil, refData(36), []int{6}},
	}
	for _, tc := range tests {
		l, err := LoadLabels(tc.path, tc.n)
		if err != nil {
			t.Errorf("LoadLabels(%s): %v", tc.path, err)
			continue
		}
		if l.N != len(tc.target)/max(1, prod(tc.shape)) || !slices.Equal(l.Class, tc.class) ||
			!slices.Equal(l.Target, tc.target) || !slices.Equal(l.TargetShape, tc.shape) {
			t.Errorf("LoadLabels(%s) = %+v", tc.path, l)
		}
		if (tc.class == nil) != (l.Class == nil) {
			t.Errorf("LoadLabels(%s): Class nil-ness %v", tc.path, l.Class == nil)
		}
	}

	for _, tc := range []struct {
		path string
		n    int
		msg  string
	}{
		{td("i8_labels.npy"), 5, "6 labels, expected 5"},
		{neg, -1, "sample 1: class index -1"},
		{nanT, -1, "sample 1: target is NaN"},
		{td("c8.npy"), -1, "unsupported dtype complex64"},
		{td("multi.npz"), -1, "exactly one array"},
		{filepath.Join(dir, "missing.npy"), -1, "cannot open"},
	} {
		_, err := LoadLabels(tc.path, tc.n)
		var de *DataError
		if !errors.As(err, &de) || de.File != tc.path || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("LoadLabels(%s, %d) error %v, want a *DataError for the file containing %q", tc.path, tc.n, err, tc.msg)
		}
	}

	// Source.LoadLabels names both files and follows Limit.
	src := mustOpen(t, []string{td("f4.npy")}, []InputSpec{spec("x", -1, 2, 3)}, Options{Limit: 4})
	_, err := src.LoadLabels(i4)
	var de *DataError
	if !errors.As(err, &de) || de.File != i4 || !strings.Contains(err.Error(), td("f4.npy")) ||
		!strings.Contains(err.Error(), "3 labels") || !strings.Contains(err.Error(), "has 6 samples") {
		t.Fatalf("mismatched labels error %v", err)
	}
	l, err := src.LoadLabels(td("f4_targets.npy"))
	if err != nil {
		t.Fatal(err)
	}
	if l.N != 4 || !slices.Equal(l.Target, []float64{0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5}) || l.Class != nil {
		t.Fatalf("limited labels %+v", l)
	}
}

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

func TestSaveNpy(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		shape []int
		f32   bool
	}{
		{[]int{5}, false},
		{[]int{5}, true},
		{[]int{4, 3}, true},
		{[]int{2, 3, 4}, false},
		{[]int{2, 1, 3, 1}, true},
		{[]int{}, false},
		{[]int{0}, true},
		{[]int{0, 3}, false},
		{[]int{3, 0}, true},
	}
	for i, tc := range tests {
		n := prod(tc.shape)
		data := make([]float64, n)
		for j := range data {
			data[j] = float64(j)*1.5 - 7 + 1e-9*float64(i)
		}
		p := filepath.Join(dir, fmt.Sprintf("out%d.npy", i))
		if err := SaveNpy(p, data, tc.shape, tc.f32); err != nil {
			t.Fatalf("SaveNpy(%v): %v", tc.shape, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h, err := readNpyHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("reading back %v: %v", tc.shape, err)
		}
		wantDescr := "<f8"
		if tc.f32 {
			wantDescr = "<f4"
		}
		if h.Descr != wantDescr || h.Fortran || !slices.Equal(h.Shape, tc.shape) {
			t.Fatalf("read back %s %v fortran=%v, want %s %v", h.Descr, h.Shape, h.Fortran, wantDescr, tc.shape)
		}
		dt, _ := parseDescr(h.Descr)
		if int64(len(b)) != h.DataOffset+int64(n*dt.Size) {
			t.Fatalf("shape %v: file has %d bytes, header %d + data %d", tc.shape, len(b), h.DataOffset, n*dt.Size)
		}
		got := make([]float64, n)
		dt.decode(got, b[h.DataOffset:])
		for j := range data {
			want := data[j]
			if tc.f32 {
				want = float64(float32(want))
			}
			if got[j] != want {
				t.Fatalf("shape %v value %d = %v, want %v", tc.shape, j, got[j], want)
			}
		}
	}
	// Overwriting works and leaves no temporary files behind.
	p := filepath.Join(dir, "out0.npy")
	if err := SaveNpy(p, []float64{1, 2}, []int{2}, false); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
	if l, err := LoadLabels(p, 2); err != nil || !slices.Equal(l.Target, []float64{1, 2}) {
		t.Fatalf("overwritten file reads %v, %v", l, err)
	}

	for _, tc := range []struct {
		path  string
		data  []float64
		shape []int
		msg   string
	}{
		{filepath.Join(dir, "bad.npy"), []float64{1, 2, 3}, []int{2, 2}, "needs 4 values, got 3"},
		{filepath.Join(dir, "neg.npy"), nil, []int{-1}, "bad shape"},
		{filepath.Join(dir, "no", "such", "dir.npy"), []float64{1}, []int{1}, "cannot create"},
	} {
		err := SaveNpy(tc.path, tc.data, tc.shape, false)
		var de *DataError
		if !errors.As(err, &de) || de.File != tc.path || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("SaveNpy(%s) error %v, want a *DataError containing %q", tc.path, err, tc.msg)
		}
		if _, err := os.Stat(tc.path); err == nil {
			t.Errorf("SaveNpy(%s) left a file after failing", tc.path)
		}
	}
}

func TestParseHeader(t *testing.T) {
	tests := []struct {
		dict    string
		descr   string
		fortran bool
		shape   []int
		err     string
	}{
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", "<f4", false, []int{3, 4}, ""},
		{`{"shape": (3,), "descr": ">f8", "fortran_order": True}`, ">f8", true, []int{3}, ""},
		{"{'descr': '|u1', 'fortran_order': False, 'shape': (2L, 5L), }   ", "|u1", false, []int{2, 5}, ""},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (), 'extra': [1, (2, 'x')]}", "<f4", false, []int{}, ""},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': [3]}", "", false, nil, "not a tuple"},
		{"{'descr': '<f4', 'fortran_order': 0, 'shape': (3,)}", "", false, nil, "fortran_order"},
		{"{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (3,)}", "", false, nil, "structured"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} x", "", false, nil, "after the header"},
		{"{'descr': '<f4' 'fortran_order': False}", "", false, nil, "expected ','"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "", false, nil, "bad integer"},
		{"(((((((((((((((((((((((((((((((((", "", false, nil, "nested"},
		{"", "", false, nil, "end of header"},
	}
	for _, tc := range tests {
		h, err := readNpyHeader(bytes.NewReader(npyBytes(tc.dict, nil)))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("header %q: error %v, want %q", tc.dict, err, tc.err)
			}
			continue
		}
		if err != nil || h.Descr != tc.descr || h.Fortran != tc.fortran || !slices.Equal(h.Shape, tc.shape) ||
			h.DataOffset != int64(10+len(tc.dict)+1) {
			t.Errorf("header %q = %+v, %v", tc.dict, h, err)
		}
	}
}

// FuzzNpyHeader checks that the .npy header parser never panics and that
// whatever it accepts is consistent and survives a re-encoding.
func FuzzNpyHeader(f *testing.F) {
	for _, name := range []string{"f4.npy", "f4_v2.npy", "f4_fortran.npy", "struct.npy", "obj.npy", "u1_labels.npy"} {
		b, err := os.ReadFile(td(name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 160)])
	}
	f.Add(npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }", nil))
	f.Add(npyBytes(`{"shape": (), "descr": "|b1", "fortran_order": True}`, nil))
	f.Add([]byte("\x93NUMPY\x03\x00\x05\x00\x00\x00{}  \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readNpyHeader(bytes.NewReader(data))
		if err != nil {
			return
		}
		if h.DataOffset > int64(len(data)) || h.DataOffset < 10 {
			t.Fatalf("data offset %d outside the input (%d bytes)", h.DataOffset, len(data))
		}
		if _, ok := numElems(h.Shape); !ok {
			t.Fatalf("accepted shape %v", h.Shape)
		}
		dims := make([]string, len(h.Shape))
		for i, d := range h.Shape {
			dims[i] = fmt.Sprint(d) + ","
		}
		fo := "False"
		if h.Fortran {
			fo = "True"
		}
		if strings.ContainsAny(h.Descr, `'"\`) {
			return
		}
		dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }", h.Descr, fo, strings.Join(dims, " "))
		h2, err := readNpyHeader(bytes.NewReader(npyBytes(dict, nil)))
		if err != nil || h2.Descr != h.Descr || h2.Fortran != h.Fortran || !slices.Equal(h2.Shape, h.Shape) {
			t.Fatalf("re-encoded header %q parses to %+v, %v; want %+v", dict, h2, err, h)
		}
		// Whatever descr it holds, parseDescr and decode must not panic.
		if dt, err := parseDescr(h.Descr); err == nil && dt.Size <= 16 {
			buf := make([]byte, 2*dt.Size)
			dt.decode(make([]float64, 2), buf)
		}
	})
}

func TestDecode(t *testing.T) {
	vals := []float64{0, 1, 5, 100, 127}
	neg := []float64{-128, -1, 0, 1, 127}
	for _, tc := range []struct {
		descr string
		vals  []float64
		put   func(b []byte, bo binary.ByteOrder, v float64)
	}{
		{"|u1", vals, func(b []byte, _ binary.ByteOrder, v float64) { b[0] = byte(v) }},
		{"|b1", []float64{0, 1, 1, 0, 1}, func(b []byte, _ binary.ByteOrder, v float64) { b[0] = byte(v) }},
		{"|i1", neg, func(b []byte, _ binary.ByteOrder, v float64) { b[0] = byte(int8(v)) }},
		{"<i2", neg, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint16(b, uint16(int16(v))) }},
		{">i2", neg, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint16(b, uint16(int16(v))) }},
		{"<u2", vals, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint16(b, uint16(v)) }},
		{"<i4", neg, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint32(b, uint32(int32(v))) }},
		{">u4", vals, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint32(b, uint32(v)) }},
		{"<i8", neg, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint64(b, uint64(int64(v))) }},
		{">i8", neg, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint64(b, uint64(int64(v))) }},
		{"<u8", vals, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint64(b, uint64(v)) }},
		{"<f2", neg, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint16(b, float16.New(float32(v)).Uint16()) }},
		{">f2", neg, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint16(b, float16.New(float32(v)).Uint16()) }},
		{"<f4", neg, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint32(b, math.Float32bits(float32(v))) }},
		{">f8", []float64{-1.5, 1e300, 0, math.Pi, 2}, func(b []byte, bo binary.ByteOrder, v float64) { bo.PutUint64(b, math.Float64bits(v)) }},
	} {
		dt, err := parseDescr(tc.descr)
		if err != nil {
			t.Fatalf("parseDescr(%q): %v", tc.descr, err)
		}
		b := make([]byte, dt.Size*len(tc.vals))
		for i, v := range tc.vals {
			tc.put(b[i*dt.Size:], dt.Order, v)
		}
		got := make([]float64, len(tc.vals))
		dt.decode(got, b)
		if !slices.Equal(got, tc.vals) {
			t.Errorf("decode %s = %v, want %v", tc.descr, got, tc.vals)
		}
	}
	for _, bad := range []string{"", "<", "<f", "<U5", "|O", "<M8[ns]", "<f99", "|V8", "<fx"} {
		if _, err := parseDescr(bad); err == nil {
			t.Errorf("parseDescr(%q) succeeded", bad)
		}
	}
}

func TestFileChangesAfterOpen(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(td("f4.npy"))
	if err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, dir, "x.npy", b)
	src := mustOpen(t, []string{p}, []InputSpec{spec("x", -1, 2, 3)}, Options{Batch: 2})
	if err := os.Truncate(p, int64(len(b)-30)); err != nil {
		t.Fatal(err)
	}
	_, err = src.ReadBatch(4, 2)
	var de *DataError
	if !errors.As(err, &de) || de.File != p || !strings.Contains(err.Error(), "reading samples 4 to 5") {
		t.Fatalf("read of a truncated file: %v", err)
	}
	var n int
	for _, err := range src.Batches() {
		if err != nil {
			if !errors.As(err, &de) {
				t.Fatalf("Batches error %v is not a *DataError", err)
			}
			break
		}
		n++
	}
	if n != 2 {
		t.Fatalf("Batches yielded %d good batches before the error, want 2", n)
	}
	if !slices.Equal(src.Files(), []string{p}) {
		t.Fatalf("Files() = %v", src.Files())
	}
}

func TestErrorUnwrap(t *testing.T) {
	_, err := Open([]string{"testdata/does-not-exist.npy"}, []InputSpec{spec("x")}, Options{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %v does not wrap fs.ErrNotExist", err)
	}
	if strings.Count(err.Error(), "does-not-exist") != 1 {
		t.Fatalf("error %q repeats the path", err)
	}
}
