package export

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ecprune/ecprune/onnxio"
)

// Save writes m (the result of Apply, whose Path is the source model) to
// out, atomically. threshold > 0 moves every tensor of at least that many
// bytes into out+".data" (repacking external tensors there too); 0 keeps
// the layout, copying untouched external tensors to their locations
// beside out.
//
// It refuses to write over the source model file or any of its external
// data files, by name or through another link (os.SameFile): a pruned
// model saved over its source would leave the user with nothing to compare
// against, and an external data file rewritten in place would corrupt the
// source. Problems with the output path are *onnxio.BadInputError values.
func Save(m *onnxio.Model, out string, threshold int64) error {
	return SaveStaged(m, out, threshold, nil)
}

// SaveStaged is Save whose files st holds until the caller commits them
// (nil: written in place at once).
func SaveStaged(m *onnxio.Model, out string, threshold int64, st *onnxio.Stage) error {
	if out == "" {
		return &onnxio.BadInputError{File: out, Msg: "no output path given"}
	}
	if threshold < 0 {
		return fmt.Errorf("saving %s: negative external data threshold %d", out, threshold)
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return &onnxio.BadInputError{File: out, Msg: "is a folder, not a file name"}
	}
	dir := filepath.Dir(out)
	if err := checkWritable(dir); err != nil {
		return &onnxio.BadInputError{File: out, Msg: err.Error()}
	}

	// Files Save will write, and the source's files it must not touch.
	targets := []string{out}
	if threshold > 0 {
		targets = append(targets, filepath.Join(dir, filepath.Base(out)+".data"))
	} else {
		for _, loc := range m.ExternalLocations() {
			targets = append(targets, filepath.Join(dir, loc))
		}
	}
	protected := []string{m.Path}
	locs := m.ExternalLocations()
	// Tensors Apply changed no longer refer to their external files, so
	// the source file says which ones it had.
	if l, err := externalLocationsFile(m.Path, false); err == nil {
		locs = append(locs, l...)
	}
	for _, loc := range locs {
		protected = append(protected, filepath.Join(m.Dir, loc))
	}
	for _, t := range targets {
		for _, p := range protected {
			if sameFile(t, p) {
				what := "the input model"
				if p != m.Path {
					what = "external data file " + p + " of the input model " + m.Path
				}
				msg := "would overwrite " + what + "; choose another output file name"
				if t != out && threshold == 0 {
					msg = "would overwrite " + what + " (the pruned model keeps its external data layout); write to another folder or save with an external data threshold"
				}
				return &onnxio.BadInputError{File: out, Msg: msg}
			}
		}
	}
	if err := m.Save(out, onnxio.SaveOptions{ExternalThreshold: threshold, Stage: st}); err != nil {
		return fmt.Errorf("saving the pruned model: %w", err)
	}
	return nil
}

// checkWritable verifies that a file can be created in dir, so a bad
// output path is reported before any work is written.
func checkWritable(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("output folder %s: %v", dir, unwrapPath(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("output folder %s is not a folder", dir)
	}
	f, err := os.CreateTemp(dir, ".ecprune-probe*")
	if err != nil {
		return fmt.Errorf("output folder %s is not writable: %v", dir, unwrapPath(err))
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// sameFile reports whether a and b name the same file: the same cleaned
// absolute path (even if it does not exist yet) or, for existing files,
// the same inode through another name or link.
func sameFile(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	if err1 == nil && err2 == nil && aa == bb {
		return true
	}
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(sa, sb)
}

// Field numbers in onnx.proto used to find external data locations
// without decoding (and copying) a whole model.
const (
	fieldModelGraph        = 7  // ModelProto.graph
	fieldGraphInitializer  = 5  // GraphProto.initializer
	fieldGraphSparse       = 15 // GraphProto.sparse_initializer
	fieldSparseValues      = 1  // SparseTensorProto.values
	fieldSparseIndices     = 2  // SparseTensorProto.indices
	fieldTensorExternal    = 13 // TensorProto.external_data
	fieldTensorLocation    = 14 // TensorProto.data_location
	externalLocationValue  = 1  // TensorProto.EXTERNAL
	fieldStringEntryKey    = 1  // StringStringEntryProto.key
	fieldStringEntryValue  = 2  // StringStringEntryProto.value
	externalLocationKeyStr = "location"
)

// externalLocationsFile lists the external data locations of a model
// file's initializers (malformed input gives what could be read), read in
// place: only the headers of the fields on the way to the tensors'
// external_data entries are read, never the tensors' data, so a large
// model costs no memory. onlyExternal keeps only the tensors whose
// data_location is EXTERNAL, the ones whose data is in those files.
func externalLocationsFile(path string, onlyExternal bool) ([]string, error) {
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

// externalLocationsAt is externalLocationsFile on the size bytes of r.
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
			if key == externalLocationKeyStr && val != "" {
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
