package onnxio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// Newest IR version and default-domain opset this build knows. Newer ones
// get a warning, not a refusal: the file may still only use known ops.
const (
	KnownIRVersion = 11
	KnownOpset     = 23
)

// protoLimit is protobuf's hard 2 GiB message limit; Save refuses to write
// a model above protoLimit-protoMargin without external data.
const (
	protoLimit  = 1<<31 - 1
	protoMargin = 16 << 20
)

// BadInputError reports a problem with a user's file. The CLI prints it
// as one line and exits with status 2.
type BadInputError struct {
	File string // the file at fault
	Msg  string
}

func (e *BadInputError) Error() string { return e.File + ": " + e.Msg }

func badInput(file, format string, args ...any) error {
	return &BadInputError{File: file, Msg: fmt.Sprintf(format, args...)}
}

// Model is a loaded ONNX model and where it came from, so that external
// data can be resolved relative to the model's folder.
type Model struct {
	Proto    *pb.ModelProto
	Path     string   // the model file, as given
	Dir      string   // folder external data locations are relative to
	Warnings []string // non-fatal findings (unknown IR version or opset)

	ext   map[externalRef][]byte // external data ranges read so far
	files map[string]*extFile    // external data files resolved so far, by location
	bases []string               // real folders external data may be in
	stage *Stage                 // LoadStaged: where the model's files are
}

// extFile is a resolved external data file.
type extFile struct {
	real string // the file's real path (links resolved)
	size int64
	err  error // why it cannot be read, for every tensor that names it
}

// Load reads an ONNX model file and checks what ecprune relies on: it is a
// model with a graph, every initializer's data length fits its dims, and
// every external data reference can be read. Problems with the file are
// *BadInputError values.
func Load(path string) (*Model, error) {
	b, err := readModelFile(path)
	if err != nil {
		return nil, err
	}
	m, err := Parse(b, path)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// LoadStaged reads a model that st holds staged for path (and its
// external data files, staged beside it), as it will be once committed.
func LoadStaged(path string, st *Stage) (*Model, error) {
	tmp, ok := st.Temp(path)
	if !ok {
		return nil, fmt.Errorf("%s: not staged", path)
	}
	b, err := readModelFile(tmp)
	if err != nil {
		return nil, err
	}
	m, err := parse(b, path, st)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Parse decodes model bytes; path names the file in messages and anchors
// external data.
func Parse(b []byte, path string) (*Model, error) { return parse(b, path, nil) }

func parse(b []byte, path string, st *Stage) (*Model, error) {
	if len(b) == 0 {
		return nil, badInput(path, "empty file, not an ONNX model")
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(b, mp); err != nil {
		return nil, badInput(path, "not an ONNX model (protobuf decoding failed: %v); truncated or another format?", err)
	}
	if mp.Graph == nil {
		return nil, badInput(path, "not an ONNX model: no graph (a protobuf of another kind?)")
	}
	m := &Model{Proto: mp, Path: path, Dir: filepath.Dir(path), ext: map[externalRef][]byte{}, files: map[string]*extFile{}, stage: st}
	if v := mp.GetIrVersion(); v <= 0 {
		return nil, badInput(path, "not an ONNX model: ir_version %d", v)
	} else if v > KnownIRVersion {
		m.Warnings = append(m.Warnings, fmt.Sprintf("%s: ir_version %d is newer than %d, which this build knows; going on", path, v, KnownIRVersion))
	}
	if v := m.Opset(""); v > KnownOpset {
		m.Warnings = append(m.Warnings, fmt.Sprintf("%s: opset %d is newer than %d, which this build knows; going on", path, v, KnownOpset))
	}
	if err := m.checkTensors(); err != nil {
		return nil, err
	}
	return m, nil
}

// Opset is the imported version of a domain ("" or "ai.onnx" is the
// default domain), or 0 if it is not imported.
func (m *Model) Opset(domain string) int64 {
	for _, o := range m.Proto.OpsetImport {
		d := o.GetDomain()
		if d == domain || (domain == "" && d == "ai.onnx") {
			return o.GetVersion()
		}
	}
	return 0
}

// checkTensors verifies that the data of every initializer matches its
// dims, resolving external data, so that later stages can trust them.
func (m *Model) checkTensors() error {
	g := m.Proto.Graph
	check := func(t *pb.TensorProto) error {
		for _, d := range t.GetDims() {
			if d < 0 {
				return badInput(m.Path, "tensor %q has a negative dimension in its shape %s", t.GetName(), FormatDims(t.GetDims()))
			}
		}
		es := ElemSize(t.GetDataType())
		if es == 0 {
			return nil // strings and exotic types: kept as they are, never decoded
		}
		n := NumElements(t.GetDims())
		if n < 0 || n > math.MaxInt64/int64(es) {
			return badInput(m.Path, "tensor %q has shape %s, too large to be stored", t.GetName(), FormatDims(t.GetDims()))
		}
		var raw []byte
		if hasRaw(t) {
			var err error
			if raw, err = m.RawBytes(t); err != nil {
				return err
			}
			if got := storedCount(t, raw, true); got != n {
				return badInput(m.Path, "tensor %q has %d bytes of data but shape %s of %s needs %d", t.GetName(), len(raw), FormatDims(t.GetDims()), TypeName(t.GetDataType()), n*int64(es))
			}
			return nil
		}
		if got := storedCount(t, nil, false); got != n {
			return badInput(m.Path, "tensor %q has %d values but shape %s needs %d", t.GetName(), got, FormatDims(t.GetDims()), n)
		}
		return nil
	}
	for _, t := range g.Initializer {
		if err := check(t); err != nil {
			return err
		}
	}
	for _, s := range g.SparseInitializer {
		for _, t := range []*pb.TensorProto{s.GetValues(), s.GetIndices()} {
			if t == nil {
				return badInput(m.Path, "sparse initializer without values or indices")
			}
			if err := check(t); err != nil {
				return err
			}
		}
	}
	return nil
}

// externalRef is a parsed external_data entry.
type externalRef struct {
	location       string
	offset, length int64 // length -1: to the end of the file
}

func parseExternal(path string, t *pb.TensorProto) (externalRef, error) {
	r := externalRef{length: -1}
	for _, kv := range t.ExternalData {
		var err error
		switch kv.GetKey() {
		case "location":
			r.location = kv.GetValue()
		case "offset":
			r.offset, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		case "length":
			r.length, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		}
		if err != nil {
			return r, badInput(path, "tensor %q: bad external_data %s=%q", t.GetName(), kv.GetKey(), kv.GetValue())
		}
	}
	if r.location == "" {
		return r, badInput(path, "tensor %q: external data without a location", t.GetName())
	}
	// A name such as "w..data" is fine; what counts is where it leads,
	// checked again on the real path when the file is opened.
	if !filepath.IsLocal(r.location) || strings.ContainsRune(r.location, 0) {
		return r, badInput(path, "tensor %q: external data location %q must be relative and stay in the model's folder", t.GetName(), r.location)
	}
	if r.offset < 0 || r.length < -1 {
		return r, badInput(path, "tensor %q: negative external data offset or length", t.GetName())
	}
	return r, nil
}

// RawBytes returns a tensor's little-endian bytes from raw_data or from its
// external data file. The returned slice must not be modified. Only the
// tensor's own range of an external file is read, after checking that the
// file is a regular file inside the model's folder (links resolved, as
// ONNX Runtime does) and that the range holds exactly what the dims need.
func (m *Model) RawBytes(t *pb.TensorProto) ([]byte, error) {
	if t.GetDataLocation() != pb.TensorProto_EXTERNAL {
		return t.RawData, nil
	}
	r, err := parseExternal(m.Path, t)
	if err != nil {
		return nil, err
	}
	if data, ok := m.ext[r]; ok {
		return data, nil
	}
	f, err := m.externalFile(r.location)
	if err != nil {
		return nil, badInput(m.Path, "tensor %q: %v", t.GetName(), err)
	}
	length := r.length
	if length < 0 {
		length = max(0, f.size-r.offset)
	}
	// Overflow-safe form of offset+length > size.
	if r.offset > f.size || length > f.size-r.offset {
		return nil, badInput(m.Path, "tensor %q: external data file %s is %d bytes, too short for offset %d length %d",
			t.GetName(), filepath.Join(m.Dir, r.location), f.size, r.offset, r.length)
	}
	if es := int64(ElemSize(t.GetDataType())); es > 0 {
		if n := NumElements(t.GetDims()); n >= 0 && n <= math.MaxInt64/es && length != n*es {
			return nil, badInput(m.Path, "tensor %q has %d bytes of external data but shape %s of %s needs %d",
				t.GetName(), length, FormatDims(t.GetDims()), TypeName(t.GetDataType()), n*es)
		}
	}
	data, err := readRange(f.real, r.offset, length)
	if err != nil {
		return nil, badInput(m.Path, "tensor %q: external data file %s: %v", t.GetName(), filepath.Join(m.Dir, r.location), err)
	}
	m.ext[r] = data
	return data, nil
}

// externalFile resolves an external data location once per model.
func (m *Model) externalFile(loc string) (*extFile, error) {
	if f, ok := m.files[loc]; ok {
		return f, f.err
	}
	f := &extFile{}
	m.files[loc] = f
	name := filepath.Join(m.Dir, loc)
	if m.stage != nil {
		if tmp, ok := m.stage.Temp(name); ok {
			name = tmp // written by this process: no need to check where
		}
	}
	real, err := filepath.EvalSymlinks(name)
	if err != nil {
		f.err = fmt.Errorf("external data file %s: %v", name, unwrapPath(err))
		return f, f.err
	}
	if !m.inside(real) {
		f.err = fmt.Errorf("external data location %q leads to %s, outside the model's folder: refusing to read it", loc, real)
		return f, f.err
	}
	st, err := os.Stat(real)
	if err != nil {
		f.err = fmt.Errorf("external data file %s: %v", name, unwrapPath(err))
		return f, f.err
	}
	if !st.Mode().IsRegular() {
		f.err = fmt.Errorf("external data file %s is not a regular file (%s)", name, fileKind(st.Mode()))
		return f, f.err
	}
	f.real, f.size = real, st.Size()
	return f, nil
}

// inside reports whether a real path is in the model's folder: the folder
// the model was named in, or the folder of the model file itself when that
// is a link (a download cache keeps both the model and its data as links
// into one folder of blobs).
func (m *Model) inside(real string) bool {
	if m.bases == nil {
		for _, p := range []string{m.Dir, filepath.Dir(evalOrAbs(m.Path))} {
			m.bases = append(m.bases, evalOrAbs(p))
		}
	}
	for _, b := range m.bases {
		if rel, err := filepath.Rel(b, real); err == nil && filepath.IsLocal(rel) {
			return true
		}
	}
	return false
}

// evalOrAbs is a path with its links resolved, or its absolute form when
// it does not exist.
func evalOrAbs(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		if a, err := filepath.Abs(r); err == nil {
			return a
		}
		return r
	}
	a, _ := filepath.Abs(p)
	return a
}

// fileKind names a non-regular file's type for messages.
func fileKind(mode os.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode&os.ModeNamedPipe != 0:
		return "a named pipe"
	case mode&os.ModeDevice != 0, mode&os.ModeCharDevice != 0:
		return "a device"
	case mode&os.ModeSocket != 0:
		return "a socket"
	}
	return "not a plain file"
}

// readRange reads exactly length bytes at offset of a regular file. The
// file is opened without blocking and checked again, so that a file
// swapped for a pipe after the check cannot hang the read.
func readRange(path string, offset, length int64) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, length)
	if _, err := f.ReadAt(buf, offset); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, unwrapPath(err)
	}
	return buf, nil
}

// OpenRegular opens a file for reading and refuses anything but a regular
// file (a pipe, a device, a folder) without blocking on it. Errors are
// plain, for the caller to name the file.
func OpenRegular(path string) (*os.File, error) { return openRegular(path) }

func openRegular(path string) (*os.File, error) {
	f, err := openNonBlocking(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, unwrapPath(err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("not a regular file (%s)", fileKind(st.Mode()))
	}
	return f, nil
}

// readModelFile reads a model file, refusing pipes, devices and files
// beyond protobuf's 2 GiB limit before reading anything.
func readModelFile(path string) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, badInput(path, "cannot read: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, badInput(path, "cannot read: %v", unwrapPath(err))
	}
	if st.Size() > protoLimit {
		return nil, badInput(path, "is %d bytes, above protobuf's 2 GiB limit: not an ONNX model (large models keep their weights in external data files)", st.Size())
	}
	b := make([]byte, st.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, badInput(path, "cannot read: %v", unwrapPath(err))
	}
	return b, nil
}

// ExternalFiles lists the real paths of the external data files the model
// reads (those that resolve), for callers that must not write over them.
func (m *Model) ExternalFiles() []string {
	var out []string
	for _, loc := range m.ExternalLocations() {
		if f, err := m.externalFile(loc); err == nil {
			out = append(out, f.real)
		}
	}
	return out
}

// Floats decodes a float tensor (FLOAT, FLOAT16, BFLOAT16, DOUBLE) from any
// storage into float64.
func (m *Model) Floats(t *pb.TensorProto) ([]float64, error) {
	raw, err := m.RawBytes(t)
	if err != nil {
		return nil, err
	}
	v, err := decodeFloats(t, raw, hasRaw(t))
	if err != nil {
		return nil, badInput(m.Path, "%v", err)
	}
	return v, nil
}

// Ints decodes an integer tensor (INT64, INT32, INT8, UINT8).
func (m *Model) Ints(t *pb.TensorProto) ([]int64, error) {
	raw, err := m.RawBytes(t)
	if err != nil {
		return nil, err
	}
	v, err := decodeInts(t, raw, hasRaw(t))
	if err != nil {
		return nil, badInput(m.Path, "%v", err)
	}
	return v, nil
}

// float32View returns the FLOAT tensor t's values as a read-only view of
// its bytes (raw_data or external data) on a little-endian host, or nil
// (another type, typed fields, misaligned bytes). The view shares the
// model's memory and keeps it alive: the extracted layer reads its
// weights where they are instead of a float64 copy.
func (m *Model) float32View(t *pb.TensorProto) []float32 {
	if t.GetDataType() != Float || !hasRaw(t) || binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return nil
	}
	n := 1
	for _, d := range t.GetDims() {
		n *= int(d)
	}
	raw, err := m.RawBytes(t)
	if err != nil || n == 0 || len(raw) != 4*n || uintptr(unsafe.Pointer(&raw[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&raw[0])), n)
}

// DecodeFloats decodes a float tensor that holds its data inline (no
// external data), e.g. one from a Constant node or a .pb file.
func DecodeFloats(t *pb.TensorProto) ([]float64, error) {
	if t.GetDataLocation() == pb.TensorProto_EXTERNAL {
		return nil, fmt.Errorf("tensor %q: external data needs its model (use Model.Floats)", t.GetName())
	}
	return decodeFloats(t, t.RawData, hasRaw(t))
}

// DiskSize is the model file's size plus its external data files'.
func (m *Model) DiskSize() (int64, error) {
	st, err := os.Stat(m.Path)
	if err != nil {
		return 0, err
	}
	total := st.Size()
	for _, loc := range m.ExternalLocations() {
		st, err := os.Stat(filepath.Join(m.Dir, loc))
		if err != nil {
			return 0, err
		}
		total += st.Size()
	}
	return total, nil
}

// ExternalLocations lists the external data files the model refers to.
func (m *Model) ExternalLocations() []string {
	seen := map[string]bool{}
	forEachTensor(m.Proto.Graph, func(t *pb.TensorProto) {
		if t.GetDataLocation() == pb.TensorProto_EXTERNAL {
			if r, err := parseExternal(m.Path, t); err == nil {
				seen[r.location] = true
			}
		}
	})
	out := make([]string, 0, len(seen))
	for l := range seen {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

// forEachTensor visits the graph's initializers and sparse initializers'
// parts, the tensors that can hold external data.
func forEachTensor(g *pb.GraphProto, f func(*pb.TensorProto)) {
	for _, t := range g.Initializer {
		f(t)
	}
	for _, s := range g.SparseInitializer {
		if s.Values != nil {
			f(s.Values)
		}
		if s.Indices != nil {
			f(s.Indices)
		}
	}
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// SaveOptions says how Save lays out tensor data.
type SaveOptions struct {
	// ExternalThreshold > 0 moves every tensor of at least this many bytes
	// into one external data file and repacks existing external tensors
	// there too. 0 keeps the layout the model has: tensors that were
	// external stay at their location and offset.
	ExternalThreshold int64
	// ExternalName is the external data file's name, relative to the
	// model; default: the model file's name + ".data".
	ExternalName string
	// Stage, if set, holds the files until the caller commits them.
	Stage *Stage
}

// externalAlign is the offset alignment of tensors in external data files,
// the usual choice of ONNX tools (lets runtimes mmap them page-aligned).
const externalAlign = 4096

// Save writes m to path atomically: data goes to temporary files in the
// target folder, which are synced and renamed into place, so a failure
// never leaves a partial file. Unchanged tensors keep their bytes.
func (m *Model) Save(path string, opt SaveOptions) error {
	out := CloneSharingData(m.Proto)
	dir := filepath.Dir(path)
	files := map[string]*extWriter{} // external files to write, by location

	if opt.ExternalThreshold > 0 {
		name := opt.ExternalName
		if name == "" {
			name = filepath.Base(path) + ".data"
		}
		w := &extWriter{}
		files[name] = w
		var err error
		forEachTensor(out.Graph, func(t *pb.TensorProto) {
			if err != nil {
				return
			}
			raw, e := m.RawBytes(t)
			if e != nil {
				err = e
				return
			}
			if !hasRaw(t) || int64(len(raw)) < opt.ExternalThreshold {
				if t.GetDataLocation() == pb.TensorProto_EXTERNAL {
					t.RawData = append([]byte{}, raw...)
					t.ExternalData = nil
					t.DataLocation = nil
				}
				return
			}
			off := w.add(raw)
			t.RawData = nil
			t.DataLocation = pb.TensorProto_EXTERNAL.Enum()
			t.ExternalData = []*pb.StringStringEntryProto{
				{Key: proto.String("location"), Value: proto.String(name)},
				{Key: proto.String("offset"), Value: proto.String(strconv.FormatInt(off, 10))},
				{Key: proto.String("length"), Value: proto.String(strconv.Itoa(len(raw)))},
			}
		})
		if err != nil {
			return err
		}
	} else {
		// Keep the layout: copy each external tensor's bytes to the same
		// location and offset in the target folder.
		var err error
		forEachTensor(out.Graph, func(t *pb.TensorProto) {
			if err != nil || t.GetDataLocation() != pb.TensorProto_EXTERNAL {
				return
			}
			r, e := parseExternal(m.Path, t)
			if e != nil {
				err = e
				return
			}
			raw, e := m.RawBytes(t)
			if e != nil {
				err = e
				return
			}
			w := files[r.location]
			if w == nil {
				w = &extWriter{}
				files[r.location] = w
			}
			w.put(r.offset, raw)
		})
		if err != nil {
			return err
		}
	}

	size := proto.Size(out)
	if size > protoLimit-protoMargin {
		return fmt.Errorf("saving %s: the model is %d bytes, at or above protobuf's 2 GiB limit: save it with external data (a size threshold)", path, size)
	}
	b, err := proto.MarshalOptions{}.Marshal(out)
	if err != nil {
		return fmt.Errorf("saving %s: %w", path, err)
	}
	locs := make([]string, 0, len(files))
	for l := range files {
		locs = append(locs, l)
	}
	sort.Strings(locs)
	writeFile, mkdir := WriteFileAtomic, mkdirs
	if opt.Stage != nil {
		writeFile = opt.Stage.WriteFile
		mkdir = func(d string) ([]string, error) { return nil, opt.Stage.MkdirAll(d) }
	}
	var written, made []string
	undo := func() {
		for _, w := range written {
			os.Remove(w)
		}
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i]) // only if empty
		}
	}
	for _, l := range locs {
		target := filepath.Join(dir, l)
		// A location in a sub-folder is written in the same sub-folder of
		// the output's folder (locations are local: it stays inside).
		m, err := mkdir(filepath.Dir(target))
		made = append(made, m...)
		if err != nil {
			undo()
			return fmt.Errorf("saving %s: external data: %w", path, err)
		}
		if err := writeFile(target, files[l].buf); err != nil {
			undo()
			return fmt.Errorf("saving %s: external data: %w", path, err)
		}
		written = append(written, target)
	}
	if err := writeFile(path, b); err != nil {
		undo()
		return fmt.Errorf("saving %s: %w", path, err)
	}
	return nil
}

// mkdirs is os.MkdirAll that returns the folders it created, outermost
// first, so that a failed save can remove them.
func mkdirs(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	var made []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !os.IsExist(err) {
			return made, err
		}
		made = append(made, missing[i])
	}
	return made, nil
}

// CloneSharingData is proto.Clone of a model, except that the tensors of
// the clone's initializers and sparse initializers share the raw_data
// bytes of mp's instead of copying them: the weights, nearly all of a
// large model, exist once. Neither model may write into those bytes
// (nothing in ecprune does: a changed tensor gets new bytes). mp's tensors
// lose their raw_data for the time of the clone, so mp must not be read
// from another goroutine meanwhile.
func CloneSharingData(mp *pb.ModelProto) *pb.ModelProto {
	if mp.Graph == nil {
		return proto.Clone(mp).(*pb.ModelProto)
	}
	var raw [][]byte
	forEachTensor(mp.Graph, func(t *pb.TensorProto) {
		raw = append(raw, t.RawData)
		t.RawData = nil
	})
	out := proto.Clone(mp).(*pb.ModelProto)
	for _, g := range []*pb.GraphProto{mp.Graph, out.Graph} {
		k := 0
		forEachTensor(g, func(t *pb.TensorProto) {
			t.RawData = raw[k]
			k++
		})
	}
	return out
}

// extWriter assembles an external data file in memory.
type extWriter struct{ buf []byte }

func (w *extWriter) add(b []byte) int64 {
	off := (int64(len(w.buf)) + externalAlign - 1) / externalAlign * externalAlign
	w.put(off, b)
	return off
}

func (w *extWriter) put(off int64, b []byte) {
	if end := off + int64(len(b)); end > int64(len(w.buf)) {
		w.buf = append(w.buf, make([]byte, end-int64(len(w.buf)))...)
	}
	copy(w.buf[off:], b)
}

// WriteFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, so readers see the old file or the new one, never
// a partial one.
func WriteFileAtomic(path string, data []byte) error {
	return WriteAtomic(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteAtomic is WriteFileAtomic for streamed output.
func WriteAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("cannot write in %s: %w", dir, unwrapPath(err))
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = write(f); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
