package onnxio

import (
	"encoding/binary"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// The onnx.proto fields on the way from a model to its tensors' external
// data entries, taken from the generated bindings' descriptors so that
// they cannot disagree with them.
var (
	fieldModelGraph       = fieldNumber(&pb.ModelProto{}, "graph")
	fieldGraphInitializer = fieldNumber(&pb.GraphProto{}, "initializer")
	fieldGraphSparse      = fieldNumber(&pb.GraphProto{}, "sparse_initializer")
	fieldSparseValues     = fieldNumber(&pb.SparseTensorProto{}, "values")
	fieldSparseIndices    = fieldNumber(&pb.SparseTensorProto{}, "indices")
	fieldTensorExternal   = fieldNumber(&pb.TensorProto{}, "external_data")
	fieldTensorLocation   = fieldNumber(&pb.TensorProto{}, "data_location")
	fieldStringEntryKey   = fieldNumber(&pb.StringStringEntryProto{}, "key")
	fieldStringEntryValue = fieldNumber(&pb.StringStringEntryProto{}, "value")
	externalLocationValue = uint64(pb.TensorProto_EXTERNAL)
)

// externalLocationKey is the external_data key that names the file.
const externalLocationKey = "location"

func fieldNumber(m proto.Message, name protoreflect.Name) protowire.Number {
	f := m.ProtoReflect().Descriptor().Fields().ByName(name)
	if f == nil {
		panic("onnx.proto has no field " + string(name))
	}
	return f.Number()
}

// FileExternalLocations lists the external data locations of a model
// file's initializers (malformed input gives what could be read), read in
// place: only the headers of the fields on the way to the tensors'
// external_data entries are read, never the tensors' data, so a large
// model costs no memory. onlyExternal keeps only the tensors whose
// data_location is EXTERNAL, the ones whose data is in those files.
func FileExternalLocations(path string, onlyExternal bool) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return externalLocationsAt(f, st.Size(), onlyExternal), nil
}

// externalLocationsAt is FileExternalLocations on the size bytes of r.
func externalLocationsAt(r io.ReaderAt, size int64, onlyExternal bool) []string {
	var out []string
	w := &fieldWalker{r: r}
	tensor := func(off, n int64) {
		var locs []string
		external := false
		w.varint = func(num protowire.Number, v uint64) {
			if num == fieldTensorLocation {
				external = v == externalLocationValue
			}
		}
		defer func() { w.varint = nil }()
		w.each(off, n, func(num protowire.Number, off, n int64) {
			if num != fieldTensorExternal {
				return
			}
			var key, val string
			w.each(off, n, func(num protowire.Number, off, n int64) {
				switch num {
				case fieldStringEntryKey:
					key = w.str(off, n)
				case fieldStringEntryValue:
					val = w.str(off, n)
				}
			})
			if key == externalLocationKey && val != "" {
				locs = append(locs, val)
			}
		})
		if external || !onlyExternal {
			out = append(out, locs...)
		}
	}
	w.each(0, size, func(num protowire.Number, off, n int64) {
		if num != fieldModelGraph {
			return
		}
		w.each(off, n, func(num protowire.Number, off, n int64) {
			switch num {
			case fieldGraphInitializer:
				tensor(off, n)
			case fieldGraphSparse:
				w.each(off, n, func(num protowire.Number, off, n int64) {
					if num == fieldSparseValues || num == fieldSparseIndices {
						tensor(off, n)
					}
				})
			}
		})
	})
	return out
}

// fieldWalker reads protobuf field headers from an io.ReaderAt through a
// small cache, skipping field values it is not asked to read.
type fieldWalker struct {
	r     io.ReaderAt
	buf   []byte // cached bytes starting at start
	start int64
	bad   bool // a read failed: stop
	// varint, if set, sees the varint fields of the messages each walks.
	varint func(num protowire.Number, v uint64)
}

// at returns up to n bytes at off (fewer at the end of the input).
func (w *fieldWalker) at(off int64, n int) []byte {
	if off < w.start || off+int64(n) > w.start+int64(len(w.buf)) {
		if cap(w.buf) < max(n, 4096) {
			w.buf = make([]byte, max(n, 4096))
		}
		w.buf = w.buf[:cap(w.buf)]
		k, err := w.r.ReadAt(w.buf, off)
		if k == 0 && err != nil {
			w.bad = true
		}
		w.buf, w.start = w.buf[:k], off
	}
	b := w.buf[off-w.start:]
	return b[:min(n, len(b))]
}

func (w *fieldWalker) str(off, n int64) string {
	if n > 1<<20 {
		return "" // not a location
	}
	b := w.at(off, int(n))
	if int64(len(b)) < n {
		return ""
	}
	return string(b)
}

// each calls f for every length-delimited field of the message at
// [off, off+n), with the offset and length of its value, and skips the
// other fields. Malformed input ends the walk.
func (w *fieldWalker) each(off, n int64, f func(num protowire.Number, off, n int64)) {
	end := off + n
	for off < end && !w.bad {
		head := w.at(off, int(min(end-off, 2*binary.MaxVarintLen64)))
		num, typ, k := protowire.ConsumeTag(head)
		if k < 0 {
			return
		}
		off += int64(k)
		head = head[k:]
		switch typ {
		case protowire.BytesType:
			v, k := protowire.ConsumeVarint(head)
			if k < 0 || v > uint64(end-off-int64(k)) {
				return
			}
			off += int64(k)
			f(num, off, int64(v))
			off += int64(v)
		case protowire.VarintType:
			v, k := protowire.ConsumeVarint(head)
			if k < 0 {
				return
			}
			off += int64(k)
			if w.varint != nil {
				w.varint(num, v)
			}
		case protowire.Fixed32Type:
			off += 4
		case protowire.Fixed64Type:
			off += 8
		default: // groups: not in onnx.proto
			return
		}
	}
}
