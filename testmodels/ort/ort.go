package ort

import (
	"errors"
	"fmt"
	"github.com/ecprune/ecprune/testmodels"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"

	onnxruntime "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

// EnvLib names the environment variable that, when set, gives the path of
// libonnxruntime.so and takes precedence over the default location.
const EnvLib = "ECPRUNE_ORT_LIB"

// RepoLibPath is where scripts/setup-deps.sh leaves the ONNX Runtime shared
// library (from the npm package onnxruntime-node), relative to the repository
// root.
const RepoLibPath = ".ci/ort/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1"

// ONNX element types (TensorProto.DataType) that Tensor.Type reports.
const (
	TypeFloat32 int32 = 1
	TypeInt32   int32 = 6
	TypeInt64   int32 = 7
	TypeBool    int32 = 9
	TypeFloat16 int32 = 10
	TypeFloat64 int32 = 11
)

// ErrNotFound is returned (wrapped) by LibPath and Init when the ONNX Runtime
// shared library cannot be found.
var ErrNotFound = errors.New("ONNX Runtime shared library not found")

// Tensor is a dense tensor with its values widened to float64.
//
// On input, Type is ignored: values are converted to the element type that
// the model declares for that input (float16 with round-to-nearest-even,
// integer types only from integral values). On output, Type is the element
// type of the tensor ORT produced (TypeFloat32, TypeFloat64, ...).
//
// Rank-0 (scalar) tensors are not supported: the Go binding rejects empty
// shapes.
type Tensor struct {
	Shape []int64
	Data  []float64
	Type  int32
}

// LibPath returns the path of the ONNX Runtime shared library: $ECPRUNE_ORT_LIB
// when set, otherwise RepoLibPath under the repository root (found by walking
// up from the working directory to go.mod). The error wraps ErrNotFound when
// no library file exists at the chosen path.
func LibPath() (string, error) {
	if p := os.Getenv(EnvLib); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: $%s=%q: %v", ErrNotFound, EnvLib, p, err)
		}
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("%w: %v (set $%s)", ErrNotFound, err, EnvLib)
	}
	p := filepath.Join(root, filepath.FromSlash(RepoLibPath))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %v (run scripts/setup-deps.sh or set $%s)", ErrNotFound, err, EnvLib)
	}
	return p, nil
}

// repoRoot walks up from the working directory to the first folder holding
// go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

var (
	initOnce sync.Once
	initErr  error
)

// Init loads the shared library found by LibPath and initialises the ONNX
// Runtime environment. Only the first call does the work; later calls return
// its result. Run and RunSingle call it themselves.
func Init() error {
	initOnce.Do(func() {
		if onnxruntime.IsInitialized() {
			return // by other code in this process
		}
		p, err := LibPath()
		if err != nil {
			initErr = err
			return
		}
		onnxruntime.SetSharedLibraryPath(p)
		if err := onnxruntime.InitializeEnvironment(onnxruntime.WithLogLevelError()); err != nil {
			initErr = fmt.Errorf("initialising ONNX Runtime from %s: %w", p, err)
		}
	})
	return initErr
}

// inCI is testmodels.InCI (kept as a name for skippable's tests).
var inCI = testmodels.InCI

// skippable reports whether Require may skip a test because of err, the
// result of Init, rather than fail it.
func skippable(err error, ci bool) bool {
	return errors.Is(err, ErrNotFound) && !ci
}

// Require initialises ONNX Runtime or stops the test. A missing library skips
// the test, except when $CI is true, where it fails it. A library that is
// present but does not load always fails the test.
func Require(t testing.TB) {
	t.Helper()
	err := Init()
	if err == nil {
		return
	}
	if skippable(err, inCI()) {
		t.Skipf("skipping ONNX Runtime comparison: %v", err)
	}
	t.Fatalf("ONNX Runtime unavailable: %v", err)
}

// RunSingle runs a model with exactly one input and returns its outputs in
// graph order.
func RunSingle(modelPath string, input Tensor) ([]Tensor, error) {
	outs, err := run(modelPath, func(ins []onnxruntime.InputOutputInfo) (map[string]Tensor, error) {
		if len(ins) != 1 {
			return nil, fmt.Errorf("model has %d inputs, RunSingle needs exactly 1", len(ins))
		}
		return map[string]Tensor{ins[0].Name: input}, nil
	})
	if err != nil {
		return nil, err
	}
	res := make([]Tensor, len(outs))
	for i, o := range outs {
		res[i] = o.t
	}
	return res, nil
}

// Run runs a model on the named inputs (every input the model declares must
// be given) and returns every graph output by name.
func Run(modelPath string, inputs map[string]Tensor) (map[string]Tensor, error) {
	outs, err := run(modelPath, func([]onnxruntime.InputOutputInfo) (map[string]Tensor, error) {
		return inputs, nil
	})
	if err != nil {
		return nil, err
	}
	res := make(map[string]Tensor, len(outs))
	for _, o := range outs {
		res[o.name] = o.t
	}
	return res, nil
}

type namedTensor struct {
	name string
	t    Tensor
}

// run does the work of Run and RunSingle; pick chooses the inputs once the
// model's declared inputs are known.
func run(modelPath string, pick func([]onnxruntime.InputOutputInfo) (map[string]Tensor, error)) (res []namedTensor, err error) {
	if err := Init(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("running %s with ONNX Runtime: %w", modelPath, err)
		}
	}()
	model, err := os.ReadFile(modelPath)
	if err != nil {
		return nil, err
	}
	// By path, not bytes: ORT resolves external data relative to the file.
	insInfo, outsInfo, err := onnxruntime.GetInputOutputInfo(modelPath)
	if err != nil {
		return nil, fmt.Errorf("reading inputs and outputs: %w", err)
	}
	if len(insInfo) == 0 {
		return nil, errors.New("models without inputs are not supported by onnxruntime_go")
	}
	inputs, err := pick(insInfo)
	if err != nil {
		return nil, err
	}
	inNames := make([]string, len(insInfo))
	declared := make(map[string]bool, len(insInfo))
	for i, in := range insInfo {
		inNames[i] = in.Name
		declared[in.Name] = true
	}
	for name := range inputs {
		if !declared[name] {
			return nil, fmt.Errorf("input %q is not an input of the model (inputs: %q)", name, inNames)
		}
	}
	outNames := make([]string, len(outsInfo))
	var f16 []string
	for i, out := range outsInfo {
		outNames[i] = out.Name
		if out.DataType == onnxruntime.TensorElementDataTypeFloat16 {
			f16 = append(f16, out.Name)
		}
	}

	inValues := make([]onnxruntime.Value, 0, len(insInfo))
	defer func() {
		for _, v := range inValues {
			_ = v.Destroy()
		}
	}()
	for _, in := range insInfo {
		t, ok := inputs[in.Name]
		if !ok {
			return nil, fmt.Errorf("input %q not given", in.Name)
		}
		v, err := newValue(t, in)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", in.Name, err)
		}
		inValues = append(inValues, v)
	}

	opts, err := onnxruntime.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("creating session options: %w", err)
	}
	defer func() { _ = opts.Destroy() }()
	// One thread each: the models are small, the machines have 2 cores and
	// tests run packages in parallel.
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("setting intra-op threads: %w", err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("setting inter-op threads: %w", err)
	}
	sess, err := onnxruntime.NewDynamicAdvancedSession(modelPath, inNames, outNames, opts)
	if err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	defer func() { _ = sess.Destroy() }()

	// ORT allocates the outputs left nil.
	outValues := make([]onnxruntime.Value, len(outNames))
	defer destroyAll(outValues)
	if len(f16) > 0 {
		shapes, err := float16OutputShapes(model, inNames, inValues, f16, opts)
		if err != nil {
			return nil, fmt.Errorf("finding the shapes of float16 outputs: %w", err)
		}
		for i, name := range outNames {
			shape, ok := shapes[name]
			if !ok {
				continue
			}
			n, err := elemCount(shape)
			if err != nil {
				return nil, fmt.Errorf("output %q: %w", name, err)
			}
			v, err := onnxruntime.NewCustomDataTensor(shape, make([]byte, 2*max(n, 1)), onnxruntime.TensorElementDataTypeFloat16)
			if err != nil {
				return nil, fmt.Errorf("allocating float16 output %q: %w", name, err)
			}
			outValues[i] = v
		}
	}
	if err := sess.Run(inValues, outValues); err != nil {
		return nil, err
	}
	res = make([]namedTensor, len(outValues))
	for i, v := range outValues {
		t, err := toTensor(v)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", outNames[i], err)
		}
		res[i] = namedTensor{name: outNames[i], t: t}
	}
	return res, nil
}

// float16OutputShapes returns the shapes that the float16 outputs named in
// f16 take for these inputs. It runs a copy of the model that outputs
// Shape(name) for each of them.
//
// onnxruntime_go v1.27 cannot return float16 outputs that ORT allocates: it
// copies one byte per element instead of two, then fails to create the Go
// tensor ("not enough space"). So those outputs must be allocated before the
// run, which needs their shapes; with a dynamic batch size the model's
// declared shapes do not tell them. (Casting them to float32 inside the graph
// does not work either: ORT then drops the float16 rounding.)
func float16OutputShapes(model []byte, inNames []string, in []onnxruntime.Value, f16 []string, opts *onnxruntime.SessionOptions) (map[string][]int64, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return nil, fmt.Errorf("decoding model: %w", err)
	}
	g := m.GetGraph()
	used := make(map[string]bool)
	for _, n := range g.GetNode() {
		for _, s := range slices.Concat(n.GetInput(), n.GetOutput()) {
			used[s] = true
		}
	}
	for _, v := range slices.Concat(g.GetInput(), g.GetOutput()) {
		used[v.GetName()] = true
	}
	for _, t := range g.GetInitializer() {
		used[t.GetName()] = true
	}
	shapeNames := make([]string, len(f16))
	for i, name := range f16 {
		sn := name + "_ecprune_ort_shape"
		for used[sn] {
			sn += "_"
		}
		used[sn] = true
		shapeNames[i] = sn
		g.Node = append(g.Node, &onnxpb.NodeProto{
			Input:  []string{name},
			Output: []string{sn},
			Name:   proto.String(sn),
			OpType: proto.String("Shape"),
		})
		g.Output = append(g.Output, &onnxpb.ValueInfoProto{
			Name: proto.String(sn),
			Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
				TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(TypeInt64)},
			}},
		})
	}
	b, err := proto.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("encoding model: %w", err)
	}
	sess, err := onnxruntime.NewDynamicAdvancedSessionWithONNXData(b, inNames, shapeNames, opts)
	if err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	defer func() { _ = sess.Destroy() }()
	out := make([]onnxruntime.Value, len(shapeNames))
	defer destroyAll(out)
	if err := sess.Run(in, out); err != nil {
		return nil, err
	}
	shapes := make(map[string][]int64, len(f16))
	for i, v := range out {
		t, ok := v.(*onnxruntime.Tensor[int64])
		if !ok {
			return nil, fmt.Errorf("Shape(%s) gave %T, want int64 tensor", f16[i], v)
		}
		shapes[f16[i]] = slices.Clone(t.GetData())
	}
	return shapes, nil
}

// destroyAll destroys the values in vs. After a failed Run, onnxruntime_go
// can leave typed nil pointers there, which are skipped.
func destroyAll(vs []onnxruntime.Value) {
	for i, v := range vs {
		if v != nil && !reflect.ValueOf(v).IsNil() {
			_ = v.Destroy()
			vs[i] = nil
		}
	}
}

// elemCount checks shape and returns its number of elements.
func elemCount(shape []int64) (int, error) {
	if len(shape) == 0 {
		return 0, errors.New("rank-0 (scalar) tensors are not supported by onnxruntime_go")
	}
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d != 0 && n > math.MaxInt32/d {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
		n *= d
	}
	return int(n), nil
}

// newValue converts t to an ORT tensor of the element type info declares.
func newValue(t Tensor, info onnxruntime.InputOutputInfo) (onnxruntime.Value, error) {
	if info.OrtValueType != onnxruntime.ONNXTypeTensor {
		return nil, fmt.Errorf("non-tensor input (%v) not supported", info.OrtValueType)
	}
	n, err := elemCount(t.Shape)
	if err != nil {
		return nil, err
	}
	if n != len(t.Data) {
		return nil, fmt.Errorf("shape %v needs %d values, got %d", t.Shape, n, len(t.Data))
	}
	if len(info.Dimensions) != len(t.Shape) {
		return nil, fmt.Errorf("shape %v has rank %d, model declares %v", t.Shape, len(t.Shape), info.Dimensions)
	}
	for i, d := range info.Dimensions {
		if d >= 0 && d != t.Shape[i] {
			return nil, fmt.Errorf("shape %v does not match declared shape %v", t.Shape, info.Dimensions)
		}
	}
	shape := onnxruntime.NewShape(t.Shape...)
	switch info.DataType {
	case onnxruntime.TensorElementDataTypeFloat:
		return newTyped(shape, t.Data, func(v float64) (float32, error) { return float32(v), nil })
	case onnxruntime.TensorElementDataTypeDouble:
		return newTyped(shape, t.Data, func(v float64) (float64, error) { return v, nil })
	case onnxruntime.TensorElementDataTypeInt64:
		return newTyped(shape, t.Data, func(v float64) (int64, error) {
			// -2^63 is exact in float64; 2^63 is the first value out of range.
			if v != math.Trunc(v) || v < math.MinInt64 || v >= -math.MinInt64 {
				return 0, fmt.Errorf("value %v is not an int64", v)
			}
			return int64(v), nil
		})
	case onnxruntime.TensorElementDataTypeInt32:
		return newTyped(shape, t.Data, func(v float64) (int32, error) {
			if v != math.Trunc(v) || v < math.MinInt32 || v > math.MaxInt32 {
				return 0, fmt.Errorf("value %v is not an int32", v)
			}
			return int32(v), nil
		})
	case onnxruntime.TensorElementDataTypeBool:
		return newTyped(shape, t.Data, func(v float64) (bool, error) { return v != 0, nil })
	case onnxruntime.TensorElementDataTypeFloat16:
		buf := make([]byte, 2*max(n, 1))
		for i, v := range t.Data {
			h := ToFloat16(v)
			buf[2*i] = byte(h)
			buf[2*i+1] = byte(h >> 8)
		}
		v, err := onnxruntime.NewCustomDataTensor(shape, buf, onnxruntime.TensorElementDataTypeFloat16)
		if err != nil {
			return nil, fmt.Errorf("creating float16 tensor: %w", err)
		}
		return v, nil
	default:
		return nil, fmt.Errorf("element type %v not supported", info.DataType)
	}
}

func newTyped[T onnxruntime.TensorData](shape onnxruntime.Shape, data []float64, conv func(float64) (T, error)) (onnxruntime.Value, error) {
	out := make([]T, len(data))
	for i, v := range data {
		c, err := conv(v)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		out[i] = c
	}
	v, err := onnxruntime.NewTensor(shape, out)
	if err != nil {
		return nil, fmt.Errorf("creating tensor: %w", err)
	}
	return v, nil
}

// toTensor widens an ORT output to float64.
func toTensor(v onnxruntime.Value) (Tensor, error) {
	shape := []int64(v.GetShape())
	switch x := v.(type) {
	case *onnxruntime.Tensor[float32]:
		return widen(shape, TypeFloat32, x.GetData(), func(v float32) float64 { return float64(v) }), nil
	case *onnxruntime.Tensor[float64]:
		return widen(shape, TypeFloat64, x.GetData(), func(v float64) float64 { return v }), nil
	case *onnxruntime.Tensor[int64]:
		return widen(shape, TypeInt64, x.GetData(), func(v int64) float64 { return float64(v) }), nil
	case *onnxruntime.Tensor[int32]:
		return widen(shape, TypeInt32, x.GetData(), func(v int32) float64 { return float64(v) }), nil
	case *onnxruntime.Tensor[bool]:
		return widen(shape, TypeBool, x.GetData(), func(v bool) float64 {
			if v {
				return 1
			}
			return 0
		}), nil
	case *onnxruntime.CustomDataTensor:
		if onnxruntime.TensorElementDataType(x.DataType()) != onnxruntime.TensorElementDataTypeFloat16 {
			return Tensor{}, fmt.Errorf("element type %v not supported", onnxruntime.TensorElementDataType(x.DataType()))
		}
		n, err := elemCount(shape)
		if err != nil {
			return Tensor{}, err
		}
		b := x.GetData()
		if len(b) < 2*n {
			return Tensor{}, fmt.Errorf("float16 output holds %d bytes, shape %v needs %d", len(b), shape, 2*n)
		}
		data := make([]float64, n)
		for i := range data {
			data[i] = FromFloat16(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
		return Tensor{Shape: shape, Data: data, Type: TypeFloat16}, nil
	default:
		return Tensor{}, fmt.Errorf("output value %T (element type %v) not supported", v, onnxruntime.TensorElementDataType(v.DataType()))
	}
}

func widen[T any](shape []int64, typ int32, data []T, conv func(T) float64) Tensor {
	out := make([]float64, len(data))
	for i, v := range data {
		out[i] = conv(v)
	}
	return Tensor{Shape: shape, Data: out, Type: typ}
}

// ToFloat16 returns the IEEE 754 binary16 bits nearest to f, ties to even.
// Values at or beyond 65520 in magnitude become infinities; NaN becomes a
// quiet NaN with f's sign.
func ToFloat16(f float64) uint16 {
	sign := uint16(0)
	if math.Signbit(f) {
		sign = 0x8000
	}
	a := math.Abs(f)
	switch {
	case math.IsNaN(f):
		return sign | 0x7e00
	case a >= 65520: // halfway between 65504 (the largest half) and 2^16
		return sign | 0x7c00
	case a == 0:
		return sign
	}
	// a = frac * 2^exp with frac in [0.5, 1): the leading bit has weight
	// 2^(exp-1).
	_, exp := math.Frexp(a)
	e := exp - 1
	if e < -14 {
		// Subnormal: a multiple of 2^-24. Scaling by a power of two is exact,
		// and a carry to 1024 yields the smallest normal's bits.
		m := math.RoundToEven(math.Ldexp(a, 24))
		return sign | uint16(m)
	}
	// Normal: 11 significant bits, the step is 2^(e-10). m is in
	// [1024, 2048]; a carry to 2048 moves into the next exponent (and at
	// e == 15 into the infinity bits, but a < 65520 prevents that).
	m := math.RoundToEven(math.Ldexp(a, 10-e))
	return sign | uint16((e+15)<<10+int(m)-1024)
}

// FromFloat16 returns the value of the IEEE 754 binary16 bits h.
func FromFloat16(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(frac, -24)
	case 0x1f:
		if frac != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	}
	return sign * math.Ldexp(1024+frac, exp-25)
}
