package calib

// NumPy .npy header parsing, dtypes and the lazy raw-data store.
//
// The header is parsed here rather than with npyio's npy.NewReader because
// that reader panics on malformed headers (it slices with unchecked
// indices), requires the dict keys in one fixed order, and only offers
// whole-array reads; calibration files come from users, and .npy data must
// be read lazily with ReadAt. .npz members are read with archive/zip as
// streams (never whole); npyio is used for float16 decoding and writing
// (see save.go).

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"codeberg.org/sbinet/npyio/npy/float16"

	"github.com/ecprune/ecprune/onnxio"
)

const (
	// maxHeaderLen bounds the .npy header dict we are willing to read.
	maxHeaderLen = 1 << 20
	// maxDataBytes bounds the data size a header may declare (overflow guard).
	maxDataBytes = 1 << 50
	// maxDims bounds the rank of an array (NumPy's own limit is 64).
	maxDims = 64
)

var npyMagic = []byte("\x93NUMPY")

// npyHeader is the parsed header of a .npy file or .npz member.
type npyHeader struct {
	Major, Minor int
	Descr        string // raw 'descr' value, e.g. "<f4"
	Fortran      bool
	Shape        []int
	DataOffset   int64 // offset of the data region from the start of the file
}

// readNpyHeader parses a .npy header from r, leaving r positioned at the
// start of the data region. It never panics, whatever r holds.
func readNpyHeader(r io.Reader) (npyHeader, error) {
	var h npyHeader
	var pre [8]byte
	if n, err := io.ReadFull(r, pre[:]); err != nil {
		if n == 0 && err == io.EOF {
			return h, errors.New("empty file, not a .npy file")
		}
		if bytes.HasPrefix(npyMagic, pre[:min(n, len(npyMagic))]) {
			return h, errors.New("truncated .npy header")
		}
		return h, errors.New("not a .npy file (bad magic)")
	}
	if !bytes.Equal(pre[:6], npyMagic) {
		return h, errors.New("not a .npy file (bad magic)")
	}
	h.Major, h.Minor = int(pre[6]), int(pre[7])
	var hlen int
	switch h.Major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return h, errors.New("truncated .npy header")
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
		h.DataOffset = 10
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return h, errors.New("truncated .npy header")
		}
		l := binary.LittleEndian.Uint32(b[:])
		if l > maxHeaderLen {
			return h, fmt.Errorf("bad .npy header: header length %d is too large", l)
		}
		hlen = int(l)
		h.DataOffset = 12
	default:
		return h, fmt.Errorf("unsupported .npy format version %d.%d", h.Major, h.Minor)
	}
	buf := make([]byte, hlen)
	if _, err := io.ReadFull(r, buf); err != nil {
		return h, errors.New("truncated .npy header")
	}
	h.DataOffset += int64(hlen)
	if err := parseHeaderDict(buf, &h); err != nil {
		return h, fmt.Errorf("bad .npy header: %w", err)
	}
	return h, nil
}

// parseHeaderDict parses the Python dict literal of a .npy header, e.g.
// "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }".
func parseHeaderDict(buf []byte, h *npyHeader) error {
	p := &pyParser{s: buf}
	v, err := p.value(0)
	if err != nil {
		return err
	}
	p.skipSpace()
	if p.i != len(p.s) {
		return fmt.Errorf("unexpected %q after the header dict", clip(p.s[p.i:]))
	}
	d, ok := v.(pyDict)
	if !ok {
		return errors.New("header is not a dict")
	}
	var seen [3]bool
	for _, kv := range d {
		switch kv.key {
		case "descr":
			s, ok := kv.val.(string)
			if !ok {
				return errors.New("structured or non-string 'descr' is not supported")
			}
			h.Descr, seen[0] = s, true
		case "fortran_order":
			b, ok := kv.val.(bool)
			if !ok {
				return errors.New("'fortran_order' is not True or False")
			}
			h.Fortran, seen[1] = b, true
		case "shape":
			t, ok := kv.val.(pyTuple)
			if !ok {
				return errors.New("'shape' is not a tuple")
			}
			if len(t) > maxDims {
				return fmt.Errorf("'shape' has %d dims (max %d)", len(t), maxDims)
			}
			shape := make([]int, len(t))
			for i, e := range t {
				n, ok := e.(int64)
				if !ok || n < 0 || n > maxDataBytes {
					return fmt.Errorf("bad dimension %v in 'shape'", e)
				}
				shape[i] = int(n)
			}
			h.Shape, seen[2] = shape, true
		}
	}
	for i, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[i] {
			return fmt.Errorf("missing key '%s'", k)
		}
	}
	if _, ok := numElems(h.Shape); !ok {
		return fmt.Errorf("shape %s is too large", shapeString(h.Shape))
	}
	return nil
}

func clip(b []byte) string {
	if len(b) > 20 {
		return string(b[:20]) + "..."
	}
	return string(b)
}

// numElems returns the product of shape, and false on overflow past
// maxDataBytes.
func numElems(shape []int) (int, bool) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d == 0 {
			n = 0
			continue
		}
		if n > maxDataBytes/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// Python literal values used in .npy headers.
type (
	pyDict []pyKV
	pyKV   struct {
		key string
		val any
	}
	pyTuple []any
	pyList  []any
)

type pyParser struct {
	s []byte
	i int
}

const maxNesting = 16

func (p *pyParser) skipSpace() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *pyParser) eof() error { return errors.New("unexpected end of header") }

// value parses a dict, tuple, list, string, int, True, False or None.
func (p *pyParser) value(depth int) (any, error) {
	if depth > maxNesting {
		return nil, errors.New("header nested too deeply")
	}
	p.skipSpace()
	if p.i >= len(p.s) {
		return nil, p.eof()
	}
	switch c := p.s[p.i]; {
	case c == '{':
		p.i++
		var d pyDict
		for {
			p.skipSpace()
			if p.i >= len(p.s) {
				return nil, p.eof()
			}
			if p.s[p.i] == '}' {
				p.i++
				return d, nil
			}
			k, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, errors.New("dict key is not a string")
			}
			p.skipSpace()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return nil, errors.New("expected ':' in dict")
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			d = append(d, pyKV{ks, v})
			if err := p.sep('}'); err != nil {
				return nil, err
			}
		}
	case c == '(' || c == '[':
		end := byte(')')
		if c == '[' {
			end = ']'
		}
		p.i++
		t := pyTuple{}
		for {
			p.skipSpace()
			if p.i >= len(p.s) {
				return nil, p.eof()
			}
			if p.s[p.i] == end {
				p.i++
				if end == ']' {
					return pyList(t), nil
				}
				return t, nil
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			t = append(t, v)
			if err := p.sep(end); err != nil {
				return nil, err
			}
		}
	case c == '\'' || c == '"':
		p.i++
		start := p.i
		for p.i < len(p.s) && p.s[p.i] != c {
			if p.s[p.i] == '\\' {
				return nil, errors.New("escapes in header strings are not supported")
			}
			p.i++
		}
		if p.i >= len(p.s) {
			return nil, p.eof()
		}
		s := string(p.s[start:p.i])
		p.i++
		return s, nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.i
		p.i++
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		n, err := strconv.ParseInt(string(p.s[start:p.i]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad integer %q", clip(p.s[start:p.i]))
		}
		if p.i < len(p.s) && (p.s[p.i] == 'L' || p.s[p.i] == 'l') { // Python 2 long
			p.i++
		}
		return n, nil
	default:
		start := p.i
		for p.i < len(p.s) && (p.s[p.i] == '_' || p.s[p.i] >= 'a' && p.s[p.i] <= 'z' || p.s[p.i] >= 'A' && p.s[p.i] <= 'Z') {
			p.i++
		}
		switch w := string(p.s[start:p.i]); w {
		case "True":
			return true, nil
		case "False":
			return false, nil
		case "None":
			return nil, nil
		default:
			p.i = start
			return nil, fmt.Errorf("unexpected %q", clip(p.s[start:]))
		}
	}
}

// sep consumes a ',' or peeks the closing delimiter.
func (p *pyParser) sep(end byte) error {
	p.skipSpace()
	if p.i >= len(p.s) {
		return p.eof()
	}
	switch p.s[p.i] {
	case ',':
		p.i++
		return nil
	case end:
		return nil
	}
	return fmt.Errorf("expected ',' or %q, got %q", end, clip(p.s[p.i:]))
}

// dtype is a simple (non-structured) NumPy element type.
type dtype struct {
	Kind  byte // 'f' float, 'u' unsigned, 'i' signed, 'b' bool, 'c' complex, ...
	Size  int  // bytes per element
	Order binary.ByteOrder
	Str   string // as written in the file, for messages
}

// Name is the NumPy name of the type, e.g. "float32".
func (d dtype) Name() string {
	switch d.Kind {
	case 'f':
		return fmt.Sprintf("float%d", 8*d.Size)
	case 'u':
		return fmt.Sprintf("uint%d", 8*d.Size)
	case 'i':
		return fmt.Sprintf("int%d", 8*d.Size)
	case 'c':
		return fmt.Sprintf("complex%d", 8*d.Size)
	case 'b':
		return "bool"
	}
	return fmt.Sprintf("%q", d.Str)
}

func (d dtype) String() string { return fmt.Sprintf("%s (%q)", d.Name(), d.Str) }

// isInputType reports whether d may be used for model inputs: floats,
// uint8 images, and int32/int64 token ids (exact in float64 below 2^53).
func (d dtype) isInputType() bool {
	switch d.Kind {
	case 'f':
		return d.Size == 2 || d.Size == 4 || d.Size == 8
	case 'u':
		return d.Size == 1
	case 'i':
		return d.Size == 4 || d.Size == 8
	}
	return false
}

// isInteger reports whether d holds integers (class labels).
func (d dtype) isInteger() bool {
	switch d.Kind {
	case 'u', 'i':
		return d.Size == 1 || d.Size == 2 || d.Size == 4 || d.Size == 8
	case 'b':
		return d.Size == 1
	}
	return false
}

// parseDescr parses a simple NumPy type string such as "<f4" or "|u1".
// Types it cannot convert (strings, objects, datetimes, ...) are errors;
// complex and other sized numeric types parse so that callers can name them.
func parseDescr(s string) (dtype, error) {
	d := dtype{Str: s, Order: binary.LittleEndian}
	t := s
	if t != "" {
		switch t[0] {
		case '<', '|', '=':
			t = t[1:]
		case '>':
			d.Order = binary.BigEndian
			t = t[1:]
		}
	}
	if t == "?" {
		t = "b1"
	}
	if len(t) < 2 {
		return d, fmt.Errorf("unsupported dtype %q", s)
	}
	d.Kind = t[0]
	n, err := strconv.Atoi(t[1:])
	if err != nil || n <= 0 || n > 16 {
		return d, fmt.Errorf("unsupported dtype %q", s)
	}
	d.Size = n
	switch d.Kind {
	case 'f', 'u', 'i', 'b', 'c':
		return d, nil
	}
	return d, fmt.Errorf("unsupported dtype %q", s)
}

// decode converts len(dst) elements of type d from b into dst.
func (d dtype) decode(dst []float64, b []byte) {
	bo := d.Order
	switch {
	case d.Kind == 'f' && d.Size == 4:
		for i := range dst {
			dst[i] = float64(math.Float32frombits(bo.Uint32(b[4*i:])))
		}
	case d.Kind == 'f' && d.Size == 8:
		for i := range dst {
			dst[i] = math.Float64frombits(bo.Uint64(b[8*i:]))
		}
	case d.Kind == 'f' && d.Size == 2:
		for i := range dst {
			dst[i] = float64(float16.Float16Frombits(bo.Uint16(b[2*i:])).Float32())
		}
	case (d.Kind == 'u' || d.Kind == 'b') && d.Size == 1:
		for i := range dst {
			dst[i] = float64(b[i])
		}
	case d.Kind == 'u' && d.Size == 2:
		for i := range dst {
			dst[i] = float64(bo.Uint16(b[2*i:]))
		}
	case d.Kind == 'u' && d.Size == 4:
		for i := range dst {
			dst[i] = float64(bo.Uint32(b[4*i:]))
		}
	case d.Kind == 'u' && d.Size == 8:
		for i := range dst {
			dst[i] = float64(bo.Uint64(b[8*i:]))
		}
	case d.Kind == 'i' && d.Size == 1:
		for i := range dst {
			dst[i] = float64(int8(b[i]))
		}
	case d.Kind == 'i' && d.Size == 2:
		for i := range dst {
			dst[i] = float64(int16(bo.Uint16(b[2*i:])))
		}
	case d.Kind == 'i' && d.Size == 4:
		for i := range dst {
			dst[i] = float64(int32(bo.Uint32(b[4*i:])))
		}
	case d.Kind == 'i' && d.Size == 8:
		for i := range dst {
			dst[i] = float64(int64(bo.Uint64(b[8*i:])))
		}
	default:
		// Callers only build stores for the types above.
		for i := range dst {
			dst[i] = math.NaN()
		}
	}
}

// store gives access to the elements of an array in storage order.
type store interface {
	// read converts the n = len(dst) elements starting at flat element
	// index off (storage order) into dst.
	read(dst []float64, off int) error
}

// rawStore reads elements lazily from a byte region.
type rawStore struct {
	ra   io.ReaderAt
	base int64 // offset of the first element
	dt   dtype
}

func (s *rawStore) read(dst []float64, off int) error {
	if len(dst) == 0 {
		return nil
	}
	b := make([]byte, len(dst)*s.dt.Size)
	n, err := s.ra.ReadAt(b, s.base+int64(off)*int64(s.dt.Size))
	if n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading data: %w", err)
	}
	s.dt.decode(dst, b)
	return nil
}

// sliceStore holds elements already decoded by another library.
type sliceStore[T any] struct {
	s    []T
	conv func(T) float64
}

func (s *sliceStore[T]) read(dst []float64, off int) error {
	if off < 0 || off+len(dst) > len(s.s) {
		return errors.New("read past the end of the data")
	}
	for i, v := range s.s[off : off+len(dst)] {
		dst[i] = s.conv(v)
	}
	return nil
}

// array is one on-disk array: its layout and where its elements are.
type array struct {
	File    string // data file, for messages
	Key     string // .npz member or "" (for messages)
	DT      dtype
	Shape   []int // full shape as stored, first axis = samples
	Fortran bool
	st      store
}

// what prefixes messages about an .npz member with its name.
func (a *array) what() string {
	if a.Key == "" {
		return ""
	}
	return fmt.Sprintf("array %q: ", a.Key)
}

// desc names the array in messages about another file: "FILE" or
// "array "key" of FILE".
func (a *array) desc() string {
	if a.Key == "" {
		return a.File
	}
	return fmt.Sprintf("array %q of %s", a.Key, a.File)
}

// rows is the number of samples (first axis).
func (a *array) rows() int {
	if len(a.Shape) == 0 {
		return 0
	}
	return a.Shape[0]
}

// per is the number of elements per sample.
func (a *array) per() int {
	n, _ := numElems(a.Shape[1:])
	return n
}

// readRun converts samples [r0, r0+n) into dst (row-major, n*per values).
func (a *array) readRun(dst []float64, r0, n int) error {
	per := a.per()
	if n == 0 || per == 0 {
		return nil
	}
	if !a.Fortran || len(a.Shape) == 1 {
		return a.st.read(dst[:n*per], r0*per)
	}
	// Fortran order: element (r, i1..ik) is at r + N*(i1 + d1*(i2 + ...)),
	// so every per-sample position is a contiguous column over samples.
	N := a.Shape[0]
	dims := a.Shape[1:]
	col := make([]float64, n)
	idx := make([]int, len(dims)) // per-sample multi-index, first fastest
	for k := range per {
		if err := a.st.read(col, k*N+r0); err != nil {
			return err
		}
		c := 0 // row-major position of idx
		for j, i := range idx {
			c = c*dims[j] + i
		}
		for s, v := range col {
			dst[s*per+c] = v
		}
		for j := range idx {
			idx[j]++
			if idx[j] < dims[j] {
				break
			}
			idx[j] = 0
		}
	}
	return nil
}

// checkDescr parses the header descr for an array to be read.
func checkDescr(h npyHeader) (dtype, error) {
	dt, err := parseDescr(h.Descr)
	if err != nil {
		return dt, err
	}
	if len(h.Shape) == 0 {
		return dt, errors.New("array is a scalar (0-d); the first axis must be the sample axis")
	}
	n, _ := numElems(h.Shape)
	if int64(n) > maxDataBytes/int64(dt.Size) {
		return dt, fmt.Errorf("shape %s is too large", shapeString(h.Shape))
	}
	return dt, nil
}

// openNpy opens a .npy file lazily: the header is read now, the data on
// demand. The returned closer closes the file.
func openNpy(path string) (*array, io.Closer, error) {
	f, err := onnxio.OpenRegular(path)
	if err != nil {
		return nil, nil, dataErr(path, err, "cannot open")
	}
	fail := func(e error) (*array, io.Closer, error) {
		f.Close()
		return nil, nil, e
	}
	st, err := f.Stat()
	if err != nil {
		return fail(dataErr(path, err, "cannot stat"))
	}
	if st.IsDir() {
		return fail(dataErrf(path, "is a directory, not a data file"))
	}
	h, err := readNpyHeader(bufio.NewReaderSize(io.NewSectionReader(f, 0, st.Size()), 4096))
	if err != nil {
		return fail(dataErrf(path, "%v", err))
	}
	dt, err := checkDescr(h)
	if err != nil {
		return fail(dataErrf(path, "%v", err))
	}
	n, _ := numElems(h.Shape)
	need := h.DataOffset + int64(n)*int64(dt.Size)
	if st.Size() < need {
		return fail(dataErrf(path, "truncated .npy file: shape %s of %s needs %d bytes, file has %d",
			shapeString(h.Shape), dt.Name(), need, st.Size()))
	}
	a := &array{File: path, DT: dt, Shape: h.Shape, Fortran: h.Fortran,
		st: &rawStore{ra: f, base: h.DataOffset, dt: dt}}
	return a, f, nil
}

// npzFile is an opened .npz archive.
type npzFile struct {
	path string
	f    *os.File
	r    *zip.Reader
}

func openNpz(path string) (*npzFile, error) {
	f, err := onnxio.OpenRegular(path)
	if err != nil {
		return nil, dataErr(path, err, "cannot open")
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, dataErr(path, err, "cannot stat")
	}
	r, err := zip.NewReader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, dataErr(path, err, "not a valid .npz (zip) archive")
	}
	return &npzFile{path: path, f: f, r: r}, nil
}

func (z *npzFile) Close() error { return z.f.Close() }

// arrayNames lists the arrays of the archive, without the ".npy" suffix.
func (z *npzFile) arrayNames() []string {
	var names []string
	for _, f := range z.r.File {
		if strings.HasSuffix(f.Name, "/") {
			continue // directory entry
		}
		names = append(names, strings.TrimSuffix(f.Name, ".npy"))
	}
	return names
}

// member returns the archive entry for array name: "name" as written by
// npyio or "name.npy" as written by NumPy.
func (z *npzFile) member(name string) (string, bool) {
	for _, f := range z.r.File {
		if f.Name == name+".npy" {
			return f.Name, true
		}
	}
	for _, f := range z.r.File {
		if f.Name == name {
			return f.Name, true
		}
	}
	return "", false
}

func (z *npzFile) file(member string) *zip.File {
	for _, f := range z.r.File {
		if f.Name == member {
			return f
		}
	}
	return nil
}

// load reads the header of the named member. Its data stays in the
// archive and is decompressed as samples are read (stored members are
// read in place): a member's memory is a batch, never the whole array,
// so neither a large array nor a zip bomb can exhaust memory. The member
// must decompress to exactly the size its header declares. The archive
// must stay open while the array is used.
func (z *npzFile) load(member string) (*array, error) {
	name := strings.TrimSuffix(member, ".npy")
	zf := z.file(member)
	if zf == nil {
		return nil, dataErrf(z.path, "array %q: no such .npz entry", name)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, dataErr(z.path, err, "array %q: cannot open .npz entry", name)
	}
	defer rc.Close()
	h, err := readNpyHeader(bufio.NewReaderSize(rc, 4096))
	if err != nil {
		return nil, dataErrf(z.path, "array %q: %v", name, err)
	}
	dt, err := checkDescr(h)
	if err != nil {
		return nil, dataErrf(z.path, "array %q: %v", name, err)
	}
	n, _ := numElems(h.Shape)
	need := h.DataOffset + int64(n)*int64(dt.Size)
	switch size := zf.UncompressedSize64; {
	case size > uint64(need):
		return nil, dataErrf(z.path, "array %q: the entry decompresses to %d bytes, more than the %d its header declares (shape %s of %s): refusing it",
			name, size, need, shapeString(h.Shape), dt.Name())
	case size < uint64(need):
		return nil, dataErrf(z.path, "array %q: truncated: shape %s of %s needs %d bytes, entry has %d",
			name, shapeString(h.Shape), dt.Name(), need, size)
	}
	var st store = &zipStore{f: zf, base: h.DataOffset, end: need, dt: dt}
	if zf.Method == zip.Store {
		if off, err := zf.DataOffset(); err == nil {
			st = &rawStore{ra: io.NewSectionReader(z.f, off, need), base: h.DataOffset, dt: dt}
		}
	}
	return &array{File: z.path, Key: name, DT: dt, Shape: h.Shape, Fortran: h.Fortran, st: st}, nil
}

// zipStore reads elements of a compressed .npz member by decompressing it
// forward; a read before the current position starts it again (each pass
// over the samples reads forward).
type zipStore struct {
	f         *zip.File
	base, end int64 // data region of the decompressed member
	dt        dtype
	rc        io.ReadCloser
	r         io.Reader // rc, limited to the declared size
	pos       int64     // decompressed bytes consumed from r
}

func (s *zipStore) read(dst []float64, off int) error {
	if len(dst) == 0 {
		return nil
	}
	at := s.base + int64(off)*int64(s.dt.Size)
	b := make([]byte, len(dst)*s.dt.Size)
	if at+int64(len(b)) > s.end {
		return errors.New("read past the end of the data")
	}
	if s.rc == nil || at < s.pos {
		if s.rc != nil {
			s.rc.Close()
		}
		rc, err := s.f.Open()
		if err != nil {
			return fmt.Errorf("reading data: %w", err)
		}
		s.rc, s.r, s.pos = rc, io.LimitReader(rc, s.end), 0
	}
	if _, err := io.CopyN(io.Discard, s.r, at-s.pos); err != nil {
		return fmt.Errorf("reading data: %w", err)
	}
	if _, err := io.ReadFull(s.r, b); err != nil {
		return fmt.Errorf("reading data: %w", err)
	}
	s.pos = at + int64(len(b))
	s.dt.decode(dst, b)
	return nil
}

// shapeString writes a shape the way NumPy prints it, "(1000, 2)".
func shapeString(shape []int) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.Itoa(d)
	}
	if len(parts) == 1 {
		return "(" + parts[0] + ",)"
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
