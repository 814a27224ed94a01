package calib

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"io"

	"codeberg.org/sbinet/npyio/npy/float16"
	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

// maxPbBytes bounds the size of a TensorProto file (protobuf messages
// cannot exceed 2 GiB anyway).
const maxPbBytes = 2 << 30

// openPb loads an ONNX TensorProto file. The tensor is decoded by
// protobuf; values are converted to float64 per batch.
func openPb(path string) (*array, string, error) {
	f, err := onnxio.OpenRegular(path)
	if err != nil {
		return nil, "", dataErr(path, err, "cannot open")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, "", dataErr(path, err, "cannot open")
	}
	if st.Size() > maxPbBytes {
		return nil, "", dataErrf(path, "TensorProto file is larger than 2 GiB")
	}
	b := make([]byte, st.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, "", dataErr(path, err, "cannot read")
	}
	t := &onnxpb.TensorProto{}
	if err := proto.Unmarshal(b, t); err != nil {
		return nil, "", dataErr(path, err, "not a valid ONNX TensorProto file")
	}
	a, err := pbArray(t)
	if err != nil {
		return nil, "", dataErrf(path, "%v", err)
	}
	a.File = path
	return a, t.GetName(), nil
}

// pbArray describes the tensor t as an array.
func pbArray(t *onnxpb.TensorProto) (*array, error) {
	if t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL || len(t.GetExternalData()) > 0 {
		return nil, fmt.Errorf("TensorProto with external data is not supported")
	}
	if t.GetSegment() != nil {
		return nil, fmt.Errorf("segmented TensorProto is not supported")
	}
	if len(t.GetDims()) == 0 {
		return nil, fmt.Errorf("TensorProto is a scalar (no dims); the first axis must be the sample axis")
	}
	if len(t.GetDims()) > maxDims {
		return nil, fmt.Errorf("TensorProto has %d dims (max %d)", len(t.GetDims()), maxDims)
	}
	shape := make([]int, len(t.GetDims()))
	for i, d := range t.GetDims() {
		if d < 0 || d > maxDataBytes {
			return nil, fmt.Errorf("TensorProto has bad dims %s", plain.Shape(t.GetDims()))
		}
		shape[i] = int(d)
	}
	n, ok := numElems(shape)
	if !ok {
		return nil, fmt.Errorf("TensorProto dims %s are too large", plain.Shape(t.GetDims()))
	}
	le := binary.LittleEndian
	var dt dtype
	typ := onnxpb.TensorProto_DataType(t.GetDataType())
	switch typ {
	case onnxpb.TensorProto_FLOAT:
		dt = dtype{Kind: 'f', Size: 4, Order: le, Str: "<f4"}
	case onnxpb.TensorProto_DOUBLE:
		dt = dtype{Kind: 'f', Size: 8, Order: le, Str: "<f8"}
	case onnxpb.TensorProto_FLOAT16:
		dt = dtype{Kind: 'f', Size: 2, Order: le, Str: "<f2"}
	case onnxpb.TensorProto_UINT8:
		dt = dtype{Kind: 'u', Size: 1, Order: le, Str: "|u1"}
	case onnxpb.TensorProto_INT8:
		dt = dtype{Kind: 'i', Size: 1, Order: le, Str: "|i1"}
	case onnxpb.TensorProto_UINT16:
		dt = dtype{Kind: 'u', Size: 2, Order: le, Str: "<u2"}
	case onnxpb.TensorProto_INT16:
		dt = dtype{Kind: 'i', Size: 2, Order: le, Str: "<i2"}
	case onnxpb.TensorProto_INT32:
		dt = dtype{Kind: 'i', Size: 4, Order: le, Str: "<i4"}
	case onnxpb.TensorProto_INT64:
		dt = dtype{Kind: 'i', Size: 8, Order: le, Str: "<i8"}
	case onnxpb.TensorProto_UINT32:
		dt = dtype{Kind: 'u', Size: 4, Order: le, Str: "<u4"}
	case onnxpb.TensorProto_UINT64:
		dt = dtype{Kind: 'u', Size: 8, Order: le, Str: "<u8"}
	case onnxpb.TensorProto_BOOL:
		dt = dtype{Kind: 'b', Size: 1, Order: le, Str: "|b1"}
	default:
		return nil, fmt.Errorf("unsupported TensorProto data type %v", typ)
	}
	a := &array{DT: dt, Shape: shape}
	if raw := t.GetRawData(); len(raw) > 0 || n == 0 {
		if int64(len(raw)) != int64(n)*int64(dt.Size) {
			return nil, fmt.Errorf("raw_data has %d bytes, dims %s of %s need %d",
				len(raw), plain.Shape(shape), dt.Name(), int64(n)*int64(dt.Size))
		}
		a.st = &rawStore{ra: bytes.NewReader(raw), dt: dt}
		return a, nil
	}
	var got int
	switch typ {
	case onnxpb.TensorProto_FLOAT:
		got = len(t.GetFloatData())
		a.st = &sliceStore[float32]{s: t.GetFloatData(), conv: func(v float32) float64 { return float64(v) }}
	case onnxpb.TensorProto_DOUBLE:
		got = len(t.GetDoubleData())
		a.st = &sliceStore[float64]{s: t.GetDoubleData(), conv: func(v float64) float64 { return v }}
	case onnxpb.TensorProto_FLOAT16:
		// float16 values are stored as their bits in int32_data.
		got = len(t.GetInt32Data())
		a.st = &sliceStore[int32]{s: t.GetInt32Data(), conv: func(v int32) float64 {
			return float64(float16.Float16Frombits(uint16(v)).Float32())
		}}
	case onnxpb.TensorProto_UINT8:
		got = len(t.GetInt32Data())
		a.st = &sliceStore[int32]{s: t.GetInt32Data(), conv: func(v int32) float64 { return float64(uint8(v)) }}
	case onnxpb.TensorProto_INT8, onnxpb.TensorProto_INT16, onnxpb.TensorProto_INT32,
		onnxpb.TensorProto_UINT16, onnxpb.TensorProto_BOOL:
		got = len(t.GetInt32Data())
		a.st = &sliceStore[int32]{s: t.GetInt32Data(), conv: func(v int32) float64 { return float64(v) }}
	case onnxpb.TensorProto_INT64:
		got = len(t.GetInt64Data())
		a.st = &sliceStore[int64]{s: t.GetInt64Data(), conv: func(v int64) float64 { return float64(v) }}
	case onnxpb.TensorProto_UINT32, onnxpb.TensorProto_UINT64:
		got = len(t.GetUint64Data())
		a.st = &sliceStore[uint64]{s: t.GetUint64Data(), conv: func(v uint64) float64 { return float64(v) }}
	}
	if got != n {
		return nil, fmt.Errorf("TensorProto holds %d values, dims %s need %d", got, plain.Shape(shape), n)
	}
	return a, nil
}
