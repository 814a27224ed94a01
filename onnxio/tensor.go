package onnxio

import (
	"encoding/binary"
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"
	"strconv"
	"strings"

	"github.com/x448/float16"
	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// ONNX element types used by ecprune (TensorProto.DataType values).
const (
	Float    = int32(pb.TensorProto_FLOAT)
	Uint8    = int32(pb.TensorProto_UINT8)
	Int8     = int32(pb.TensorProto_INT8)
	Int32    = int32(pb.TensorProto_INT32)
	Int64    = int32(pb.TensorProto_INT64)
	Bool     = int32(pb.TensorProto_BOOL)
	Float16  = int32(pb.TensorProto_FLOAT16)
	Double   = int32(pb.TensorProto_DOUBLE)
	BFloat16 = int32(pb.TensorProto_BFLOAT16)
)

// IsFloatType reports whether ecprune can analyse and prune weights of
// element type dt.
func IsFloatType(dt int32) bool {
	switch dt {
	case Float, Float16, BFloat16, Double:
		return true
	}
	return false
}

// TypeName is the ONNX spelling of an element type, for messages.
func TypeName(dt int32) string {
	if n, ok := pb.TensorProto_DataType_name[dt]; ok {
		return n
	}
	return fmt.Sprintf("type %d", dt)
}

// ElemSize is the number of bytes one element of type dt takes in raw_data,
// or 0 for types ecprune does not decode.
func ElemSize(dt int32) int {
	switch dt {
	case Float, Int32:
		return 4
	case Double, Int64:
		return 8
	case Float16, BFloat16:
		return 2
	case Uint8, Int8, Bool:
		return 1
	}
	return 0
}

// NumElements is the product of dims (1 for a scalar), or -1 when a dim is
// negative or the product overflows: a corrupt file must not make ecprune
// allocate without bound.
func NumElements(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		if d < 0 || (d > 0 && n > math.MaxInt64/d) {
			return -1
		}
		n *= d
	}
	return n
}

// RoundTo rounds v to the nearest value representable in element type dt,
// so that the analysis sees exactly what a runtime will compute with.
func RoundTo(dt int32, v float64) float64 {
	switch dt {
	case Float:
		return float64(float32(v))
	case Float16:
		return float64(float16.Fromfloat32(float32(v)).Float32())
	case BFloat16:
		return float64(bf16ToF32(f32ToBF16(float32(v))))
	}
	return v
}

// f32ToBF16 rounds to nearest even, keeping NaN a NaN.
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// decodeFloats decodes a float tensor whose bytes (for raw or external
// storage) are raw. It checks the element count against dims.
func decodeFloats(t *pb.TensorProto, raw []byte, useRaw bool) ([]float64, error) {
	dt := t.GetDataType()
	n := NumElements(t.GetDims())
	if n < 0 {
		return nil, fmt.Errorf("tensor %q: bad dims %s", t.GetName(), plain.Shape(t.GetDims()))
	}
	if have := storedCount(t, raw, useRaw); have != n {
		return nil, fmt.Errorf("tensor %q: %d elements of data for dims %s of %s (want %d)", t.GetName(), have, plain.Shape(t.GetDims()), TypeName(dt), n)
	}
	out := make([]float64, n)
	if useRaw {
		es := ElemSize(dt)
		if es == 0 || !IsFloatType(dt) {
			return nil, fmt.Errorf("tensor %q: element type %s is not a float type", t.GetName(), TypeName(dt))
		}
		if int64(len(raw)) != n*int64(es) {
			return nil, fmt.Errorf("tensor %q: %d bytes of data for dims %s of %s (want %d)", t.GetName(), len(raw), plain.Shape(t.GetDims()), TypeName(dt), n*int64(es))
		}
		for i := range out {
			switch dt {
			case Float:
				out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
			case Double:
				out[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
			case Float16:
				out[i] = float64(float16.Frombits(binary.LittleEndian.Uint16(raw[2*i:])).Float32())
			case BFloat16:
				out[i] = float64(bf16ToF32(binary.LittleEndian.Uint16(raw[2*i:])))
			}
		}
		return out, nil
	}
	count := func(got int) error {
		if int64(got) != n {
			return fmt.Errorf("tensor %q: %d values for dims %s (want %d)", t.GetName(), got, plain.Shape(t.GetDims()), n)
		}
		return nil
	}
	switch dt {
	case Float:
		if err := count(len(t.FloatData)); err != nil {
			return nil, err
		}
		for i, v := range t.FloatData {
			out[i] = float64(v)
		}
	case Double:
		if err := count(len(t.DoubleData)); err != nil {
			return nil, err
		}
		copy(out, t.DoubleData)
	case Float16, BFloat16:
		// The bit patterns are stored in int32_data, one per element.
		if err := count(len(t.Int32Data)); err != nil {
			return nil, err
		}
		for i, v := range t.Int32Data {
			if dt == Float16 {
				out[i] = float64(float16.Frombits(uint16(v)).Float32())
			} else {
				out[i] = float64(bf16ToF32(uint16(v)))
			}
		}
	default:
		return nil, fmt.Errorf("tensor %q: element type %s is not a float type", t.GetName(), TypeName(dt))
	}
	return out, nil
}

// decodeInts decodes an integer tensor (INT64, INT32, UINT8, INT8).
func decodeInts(t *pb.TensorProto, raw []byte, useRaw bool) ([]int64, error) {
	dt := t.GetDataType()
	n := NumElements(t.GetDims())
	if n < 0 {
		return nil, fmt.Errorf("tensor %q: bad dims %s", t.GetName(), plain.Shape(t.GetDims()))
	}
	if have := storedCount(t, raw, useRaw); have != n {
		return nil, fmt.Errorf("tensor %q: %d elements of data for dims %s of %s (want %d)", t.GetName(), have, plain.Shape(t.GetDims()), TypeName(dt), n)
	}
	out := make([]int64, n)
	if useRaw {
		es := ElemSize(dt)
		if es == 0 || IsFloatType(dt) {
			return nil, fmt.Errorf("tensor %q: element type %s is not an integer type", t.GetName(), TypeName(dt))
		}
		if int64(len(raw)) != n*int64(es) {
			return nil, fmt.Errorf("tensor %q: %d bytes of data for dims %s of %s (want %d)", t.GetName(), len(raw), plain.Shape(t.GetDims()), TypeName(dt), n*int64(es))
		}
		for i := range out {
			switch dt {
			case Int64:
				out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
			case Int32:
				out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
			case Uint8, Bool:
				out[i] = int64(raw[i])
			case Int8:
				out[i] = int64(int8(raw[i]))
			}
		}
		return out, nil
	}
	var src []int64
	switch dt {
	case Int64:
		src = t.Int64Data
	case Int32, Uint8, Int8, Bool:
		src = make([]int64, len(t.Int32Data))
		for i, v := range t.Int32Data {
			src[i] = int64(v)
		}
	default:
		return nil, fmt.Errorf("tensor %q: element type %s is not an integer type", t.GetName(), TypeName(dt))
	}
	if int64(len(src)) != n {
		return nil, fmt.Errorf("tensor %q: %d values for dims %s (want %d)", t.GetName(), len(src), plain.Shape(t.GetDims()), n)
	}
	copy(out, src)
	return out, nil
}

// storedCount is how many elements a tensor's data holds (-1 when raw
// bytes are not a whole number of elements or the type is not decodable).
func storedCount(t *pb.TensorProto, raw []byte, useRaw bool) int64 {
	dt := t.GetDataType()
	if useRaw {
		es := ElemSize(dt)
		if es == 0 || len(raw)%es != 0 {
			return -1
		}
		return int64(len(raw) / es)
	}
	switch dt {
	case Float:
		return int64(len(t.FloatData))
	case Double:
		return int64(len(t.DoubleData))
	case Int64:
		return int64(len(t.Int64Data))
	}
	return int64(len(t.Int32Data))
}

// hasRaw tells whether a tensor keeps its data in raw_data (or externally),
// as opposed to a typed repeated field.
func hasRaw(t *pb.TensorProto) bool {
	return t.RawData != nil || t.GetDataLocation() == pb.TensorProto_EXTERNAL
}

// EncodeFloats returns a new tensor like `like` (name, doc string, element
// type, metadata) holding values with the given dims. Values are rounded to
// the element type; -0.0 becomes +0.0 because runtimes count a negative zero
// as a non-zero. Data goes to raw_data when `like` used raw or external
// storage, else to the typed field it used, so a file keeps its style.
func EncodeFloats(like *pb.TensorProto, dims []int64, values []float64) *pb.TensorProto {
	dt := like.GetDataType()
	t := &pb.TensorProto{
		Dims:          append([]int64(nil), dims...),
		DataType:      proto.Int32(dt),
		Name:          like.Name,
		DocString:     like.DocString,
		MetadataProps: like.MetadataProps,
	}
	if NumElements(dims) != int64(len(values)) {
		panic(fmt.Sprintf("onnxio.EncodeFloats: %d values for dims %s", len(values), plain.Shape(dims)))
	}
	raw := hasRaw(like)
	if raw {
		t.RawData = encodeRaw(dt, values)
		return t
	}
	switch dt {
	case Float:
		t.FloatData = make([]float32, len(values))
		for i, v := range values {
			t.FloatData[i] = float32(v) + 0
		}
	case Double:
		t.DoubleData = make([]float64, len(values))
		for i, v := range values {
			t.DoubleData[i] = v + 0
		}
	case Float16, BFloat16:
		t.Int32Data = make([]int32, len(values))
		for i, v := range values {
			t.Int32Data[i] = int32(halfBits(dt, v))
		}
	default:
		panic("onnxio.EncodeFloats: not a float type: " + TypeName(dt))
	}
	return t
}

// NewFloatTensor makes a raw_data tensor of element type dt.
func NewFloatTensor(name string, dt int32, dims []int64, values []float64) *pb.TensorProto {
	return &pb.TensorProto{
		Name:     proto.String(name),
		DataType: proto.Int32(dt),
		Dims:     append([]int64(nil), dims...),
		RawData:  encodeRaw(dt, values),
	}
}

func halfBits(dt int32, v float64) uint16 {
	var b uint16
	if dt == Float16 {
		b = float16.Fromfloat32(float32(v)).Bits()
	} else {
		b = f32ToBF16(float32(v))
	}
	if b&0x7fff == 0 {
		return 0 // a value that rounds to zero is written as +0
	}
	return b
}

func encodeRaw(dt int32, values []float64) []byte {
	es := ElemSize(dt)
	b := make([]byte, es*len(values))
	for i, v := range values {
		if v == 0 {
			continue // +0.0 in every float format is all zero bits
		}
		switch dt {
		case Float:
			if f := float32(v); f != 0 { // -1e-300 rounds to -0: keep +0
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
			}
		case Double:
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(v))
		case Float16, BFloat16:
			binary.LittleEndian.PutUint16(b[2*i:], halfBits(dt, v))
		default:
			panic("onnxio.encodeRaw: not a float type: " + TypeName(dt))
		}
	}
	return b
}

// FormatDims writes a shape the way NumPy users read it, "(1, 784)", for
// messages.
func FormatDims(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = strconv.FormatInt(d, 10)
	}
	if len(parts) == 1 {
		return "(" + parts[0] + ",)"
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
