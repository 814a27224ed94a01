package calib

import (
	"errors"
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"io"
	"io/fs"
	"iter"
	"math"
	"math/bits"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/ecprune/ecprune/onnxio"
)

// DefaultBatch is the batch size used when Options.Batch is 0.
const DefaultBatch = 64

// InputSpec is a graph input of the model as declared in the ONNX file.
type InputSpec struct {
	Name string
	// Shape is the full declared shape including the batch axis; -1 or 0
	// marks a dynamic or unknown dim. A nil or empty Shape (unknown rank)
	// accepts any data shape.
	Shape []int64
}

// Options controls how data is read.
type Options struct {
	// Batch is the maximum number of samples per batch (0 = DefaultBatch).
	Batch int
	// Limit is the maximum number of samples used, taken from the start of
	// the files (0 = all). Having fewer samples than Limit is a warning.
	Limit int
	// Warn, if set, is called with each warning as it happens, in
	// addition to the warning being recorded in Source.Warnings.
	Warn func(string)
}

// DataError is a problem with a user-supplied data file. Its message is
// "FILE: problem" and fits on one line.
type DataError struct {
	File string // the data file ("" for problems not tied to a file)
	Msg  string
	Err  error // underlying error, if any (already summarised in Msg)
}

func (e *DataError) Error() string {
	if e.File == "" {
		return e.Msg
	}
	return e.File + ": " + e.Msg
}

func (e *DataError) Unwrap() error { return e.Err }

func dataErrf(file, format string, args ...any) *DataError {
	return &DataError{File: file, Msg: fmt.Sprintf(format, args...)}
}

// dataErr wraps err; a *fs.PathError is shown without repeating the path.
func dataErr(file string, err error, format string, args ...any) *DataError {
	cause := err
	var pe *fs.PathError
	if errors.As(err, &pe) {
		cause = pe.Err
	}
	msg := fmt.Sprintf(format, args...)
	return &DataError{File: file, Msg: msg + ": " + cause.Error(), Err: err}
}

// Batch is a run of consecutive samples of a Source.
type Batch struct {
	Start int // index of the first sample in the Source
	N     int // number of samples
	// Inputs holds one slice per graph input (in InputSpec order), each
	// row-major with shape Shapes[i] = [N, per-sample dims...].
	Inputs [][]float64
	Shapes [][]int
}

// Source is a set of calibration samples. It is cheap to copy views of
// (Split, WithBatch); all views share the open files, which Close releases.
// A Source may be read from several goroutines at once.
type Source struct {
	d     *dataset
	rows  []int // file rows of the samples; nil means [off, off+n)
	off   int
	n     int
	batch int
}

type dataset struct {
	varies bool // Validate saw two samples that differ
	files  []string
	inputs []input
	total  int // samples in the files

	mu     sync.Mutex
	warns  []string
	warnFn func(string)

	closers   []io.Closer
	closeOnce sync.Once
	closeErr  error
}

type input struct {
	spec   InputSpec
	arr    *array
	sample []int // per-sample shape handed out
	per    int
}

func (d *dataset) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.warns = append(d.warns, msg)
	fn := d.warnFn
	d.mu.Unlock()
	if fn != nil {
		fn(msg)
	}
}

func (d *dataset) close() error {
	d.closeOnce.Do(func() {
		for _, c := range d.closers {
			if err := c.Close(); err != nil && d.closeErr == nil {
				d.closeErr = err
			}
		}
	})
	return d.closeErr
}

type fileKind int

const (
	kindNpy fileKind = iota
	kindNpz
	kindPb
)

// kindOf tells the format of a data file from its extension, or from its
// first bytes when the extension is unknown.
func kindOf(path string) (fileKind, error) {
	// Checked first whatever the name: a pipe or a device named x.npy
	// must not be read.
	if f, err := onnxio.OpenRegular(path); err != nil {
		return 0, dataErr(path, err, "cannot open")
	} else {
		f.Close()
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".npy":
		return kindNpy, nil
	case ".npz":
		return kindNpz, nil
	case ".pb":
		return kindPb, nil
	}
	f, err := onnxio.OpenRegular(path)
	if err != nil {
		return 0, dataErr(path, err, "cannot open")
	}
	defer f.Close()
	var b [6]byte
	n, _ := io.ReadFull(f, b[:])
	switch {
	case n == 6 && string(b[:]) == string(npyMagic):
		return kindNpy, nil
	case n >= 4 && string(b[:4]) == "PK\x03\x04":
		return kindNpz, nil
	}
	return 0, dataErrf(path, "unknown data file type (want .npy, .npz or an ONNX TensorProto .pb)")
}

// Open opens calibration data for a model with the given graph inputs.
// paths is either a single .npz keyed by input name, or one file per input
// in graph-input order (.npy, .pb or single-array .npz). Open reads the
// headers, checks dtypes and shapes, and makes one streaming pass over the
// selected samples to reject NaN and Inf. Problems with the files are
// *DataError values.
func Open(paths []string, specs []InputSpec, opt Options) (src *Source, err error) {
	if opt.Batch < 0 {
		return nil, &DataError{Msg: fmt.Sprintf("batch size must not be negative (got %d)", opt.Batch)}
	}
	if opt.Limit < 0 {
		return nil, &DataError{Msg: fmt.Sprintf("sample limit must not be negative (got %d)", opt.Limit)}
	}
	if len(specs) == 0 {
		return nil, &DataError{Msg: "the model declares no graph inputs"}
	}
	if len(paths) == 0 {
		return nil, &DataError{Msg: "no calibration data files given"}
	}
	seen := map[string]bool{}
	for _, s := range specs {
		if seen[s.Name] {
			return nil, &DataError{Msg: fmt.Sprintf("graph input %q is declared twice", s.Name)}
		}
		seen[s.Name] = true
	}
	d := &dataset{files: append([]string{}, paths...), warnFn: opt.Warn}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	arrs := make([]*array, len(specs))
	if len(paths) == 1 && len(specs) > 1 {
		k, err := kindOf(paths[0])
		if err != nil {
			return nil, err
		}
		if k != kindNpz {
			return nil, dataErrf(paths[0], "the model has %d inputs (%s): pass one .npz keyed by input name, or one file per input in graph order",
				len(specs), specNames(specs))
		}
		z, err := openNpz(paths[0])
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, z)
		var missing []string
		used := map[string]bool{}
		for i, s := range specs {
			m, ok := z.member(s.Name)
			if !ok {
				missing = append(missing, fmt.Sprintf("%q", s.Name))
				continue
			}
			used[strings.TrimSuffix(m, ".npy")] = true
			if arrs[i], err = z.load(m); err != nil {
				return nil, err
			}
		}
		if len(missing) > 0 {
			return nil, dataErrf(paths[0], "no array for graph input %s (arrays in the file: %s)",
				strings.Join(missing, ", "), quoteList(z.arrayNames()))
		}
		var extra []string
		for _, n := range z.arrayNames() {
			if !used[n] {
				extra = append(extra, n)
			}
		}
		if len(extra) > 0 {
			d.warn("%s: ignoring arrays that are not graph inputs: %s", paths[0], quoteList(extra))
		}
	} else {
		if len(paths) != len(specs) {
			return nil, dataErrf(paths[0], "%d data files given but the model has %d input(s) (%s); give one file per input in graph order, or one .npz keyed by input name",
				len(paths), len(specs), specNames(specs))
		}
		for i, p := range paths {
			if arrs[i], err = openOne(d, p, specs[i].Name); err != nil {
				return nil, err
			}
		}
	}

	for i, a := range arrs {
		s := specs[i]
		if !a.DT.isInputType() {
			return nil, dataErrf(a.File, "%sunsupported dtype %s for input %q (want float32, float64, float16, uint8, int32 or int64)",
				a.what(), a.DT, s.Name)
		}
		sample, err := resolveSample(s.Shape, a.Shape)
		if err != nil {
			return nil, dataErrf(a.File, "%sshape mismatch for input %q: %v", a.what(), s.Name, err)
		}
		d.inputs = append(d.inputs, input{spec: s, arr: a, sample: sample, per: a.per()})
	}
	d.total = arrs[0].rows()
	for _, a := range arrs[1:] {
		if a.rows() != d.total {
			return nil, dataErrf(a.File, "%s%d samples, but %s has %d (all inputs need the same number of samples)",
				a.what(), a.rows(), arrs[0].desc(), d.total)
		}
	}
	if d.total == 0 {
		return nil, dataErrf(arrs[0].File, "%sno samples (the first axis has length 0)", arrs[0].what())
	}
	n := d.total
	if opt.Limit > 0 {
		if opt.Limit < n {
			n = opt.Limit
		} else if opt.Limit > n {
			d.warn("%s: only %d samples available, fewer than the limit of %d; using all %d",
				arrs[0].File, n, opt.Limit, n)
		}
	}
	batch := opt.Batch
	if batch == 0 {
		batch = DefaultBatch
	}
	src = &Source{d: d, n: n, batch: batch}
	if err := src.Validate(); err != nil {
		return nil, err
	}
	return src, nil
}

// openOne opens the data file for one graph input.
func openOne(d *dataset, path, name string) (*array, error) {
	k, err := kindOf(path)
	if err != nil {
		return nil, err
	}
	switch k {
	case kindNpy:
		a, c, err := openNpy(path)
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, c)
		return a, nil
	case kindPb:
		a, tname, err := openPb(path)
		if err != nil {
			return nil, err
		}
		if tname != "" && name != "" && tname != name {
			d.warn("%s: tensor is named %q but is used for graph input %q", path, tname, name)
		}
		return a, nil
	default:
		z, err := openNpz(path)
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, z) // the member is read from the archive
		names := z.arrayNames()
		m, ok := z.member(name)
		if !ok {
			if len(names) != 1 {
				return nil, dataErrf(path, "no array named %q and not exactly one array (arrays in the file: %s)",
					name, quoteList(names))
			}
			m, _ = z.member(names[0])
		}
		if len(names) > 1 {
			var extra []string
			for _, n := range names {
				if n != strings.TrimSuffix(m, ".npy") {
					extra = append(extra, n)
				}
			}
			d.warn("%s: ignoring arrays that are not graph inputs: %s", path, quoteList(extra))
		}
		return z.load(m)
	}
}

func specNames(specs []InputSpec) string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return quoteList(names)
}

func quoteList(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

// Close releases the files of the Source and of every view derived from it.
func (s *Source) Close() error { return s.d.close() }

// N is the number of samples.
func (s *Source) N() int { return s.n }

// BatchSize is the maximum number of samples per batch.
func (s *Source) BatchSize() int { return s.batch }

// WithBatch returns a view of the same samples read in batches of at most
// b samples (b <= 0 means DefaultBatch).
func (s *Source) WithBatch(b int) *Source {
	if b <= 0 {
		b = DefaultBatch
	}
	v := *s
	v.batch = b
	return &v
}

// Files returns the data files, as given to Open.
func (s *Source) Files() []string { return append([]string{}, s.d.files...) }

// Inputs returns the graph inputs the data was opened for.
func (s *Source) Inputs() []InputSpec {
	out := make([]InputSpec, len(s.d.inputs))
	for i, in := range s.d.inputs {
		out[i] = in.spec
	}
	return out
}

// SampleShape is the per-sample shape (without the batch axis) in which
// samples of input i are given.
func (s *Source) SampleShape(i int) []int {
	return append([]int{}, s.d.inputs[i].sample...)
}

// Warnings returns the warnings so far (also passed to Options.Warn).
func (s *Source) Warnings() []string {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return append([]string{}, s.d.warns...)
}

// Row maps sample i of the Source to its row (first-axis index) in the
// data files.
func (s *Source) Row(i int) int {
	if s.rows != nil {
		return s.rows[i]
	}
	return s.off + i
}

// Batches iterates over the samples in order, in batches of at most
// BatchSize samples, each freshly allocated and owned by the caller. On
// error it yields a zero Batch and the error, and stops. It may be ranged
// over any number of times.
func (s *Source) Batches() iter.Seq2[Batch, error] {
	return func(yield func(Batch, error) bool) {
		for start := 0; start < s.n; start += s.batch {
			b, err := s.ReadBatch(start, min(s.batch, s.n-start))
			if err != nil {
				yield(Batch{}, err)
				return
			}
			if !yield(b, nil) {
				return
			}
		}
	}
}

// Validate reads every sample once, checking that it can be read and holds
// no NaN or Inf. Open already does this.
//
// It also notes whether any two samples differ (Varies): data whose
// samples are all the same gives every weight an importance of zero.
func (s *Source) Validate() error {
	var first [][]float64
	for b, err := range s.Batches() {
		if err != nil {
			return err
		}
		for k, in := range b.Inputs {
			per := len(in) / max(b.N, 1)
			if first == nil || len(first) <= k {
				first = append(first, append([]float64(nil), in[:per]...))
			}
			if s.d.varies {
				continue
			}
			for i, v := range in {
				if v != first[k][i%max(per, 1)] {
					s.d.varies = true
					break
				}
			}
		}
	}
	return nil
}

// Varies reports whether Validate found two samples of the data that
// differ in any input value.
func (s *Source) Varies() bool { return s.d.varies }

// ReadBatch reads samples [start, start+n).
func (s *Source) ReadBatch(start, n int) (Batch, error) {
	if start < 0 || n < 0 || start > s.n || n > s.n-start {
		return Batch{}, fmt.Errorf("calib: batch [%d, %d) out of range [0, %d)", start, start+n, s.n)
	}
	b := Batch{Start: start, N: n,
		Inputs: make([][]float64, len(s.d.inputs)),
		Shapes: make([][]int, len(s.d.inputs))}
	// Consecutive file rows are read together.
	type run struct{ r0, n int }
	var runs []run
	for i := range n {
		r := s.Row(start + i)
		if k := len(runs) - 1; k >= 0 && runs[k].r0+runs[k].n == r {
			runs[k].n++
		} else {
			runs = append(runs, run{r, 1})
		}
	}
	for k, in := range s.d.inputs {
		buf := make([]float64, n*in.per)
		pos := 0
		for _, ru := range runs {
			if err := in.arr.readRun(buf[pos*in.per:], ru.r0, ru.n); err != nil {
				return Batch{}, dataErr(in.arr.File, err, "%sreading samples %d to %d", in.arr.what(), ru.r0, ru.r0+ru.n-1)
			}
			pos += ru.n
		}
		if in.arr.DT.Kind == 'f' {
			if err := checkFinite(buf, in, s, start); err != nil {
				return Batch{}, err
			}
		}
		b.Inputs[k] = buf
		b.Shapes[k] = append([]int{n}, in.sample...)
	}
	return b, nil
}

// checkFinite rejects NaN and Inf, naming the file row of the sample.
func checkFinite(buf []float64, in input, s *Source, start int) error {
	for i, v := range buf {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			j := i / max(in.per, 1)
			what := "NaN"
			if math.IsInf(v, 0) {
				what = "Inf"
			}
			return dataErrf(in.arr.File, "%ssample %d of input %q contains %s (at per-sample index %s)",
				in.arr.what(), s.Row(start+j), in.spec.Name, what, plain.List(unravel(i%max(in.per, 1), in.sample)))
		}
	}
	return nil
}

// unravel turns a row-major flat index into a multi-index.
func unravel(i int, shape []int) []int {
	idx := make([]int, len(shape))
	for k := len(shape) - 1; k >= 0; k-- {
		if shape[k] > 0 {
			idx[k] = i % shape[k]
			i /= shape[k]
		}
	}
	return idx
}

// sub returns the view of samples [start, start+n) of s.
func (s *Source) sub(start, n int) *Source {
	v := &Source{d: s.d, n: n, batch: s.batch}
	if s.rows == nil {
		v.off = s.off + start
	} else {
		v.rows = s.rows[start : start+n : start+n]
	}
	return v
}

// Split divides the samples into a calibration part and a holdout part of
// floor(frac*N) samples (frac is clamped to [0, 1]). With seed 0 the
// holdout is the last floor(frac*N) samples; with any other seed it is a
// pseudo-random subset of that size chosen by a generator defined in this
// package, so the same seed, N and frac select the same samples on every
// platform and Go version. Both parts keep the original sample order and
// share s's files.
func (s *Source) Split(frac float64, seed uint64) (calib, holdout *Source) {
	if !(frac > 0) { // also NaN
		frac = 0
	}
	frac = min(frac, 1)
	k := int(math.Floor(frac * float64(s.n)))
	k = min(max(k, 0), s.n)
	if seed == 0 {
		return s.sub(0, s.n-k), s.sub(s.n-k, k)
	}
	// Partial Fisher-Yates over 0..n-1 with splitmix64.
	perm := make([]int, s.n)
	for i := range perm {
		perm[i] = i
	}
	st := seed
	for i := range k {
		st += 0x9e3779b97f4a7c15
		z := st
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		hi, _ := bits.Mul64(z, uint64(s.n-i))
		j := i + int(hi)
		perm[i], perm[j] = perm[j], perm[i]
	}
	hold := perm[:k]
	sort.Ints(hold)
	in := make([]bool, s.n)
	for _, i := range hold {
		in[i] = true
	}
	cr := make([]int, 0, s.n-k)
	hr := make([]int, 0, k)
	for i := range s.n {
		if in[i] {
			hr = append(hr, s.Row(i))
		} else {
			cr = append(cr, s.Row(i))
		}
	}
	calib = &Source{d: s.d, rows: cr, n: len(cr), batch: s.batch}
	holdout = &Source{d: s.d, rows: hr, n: len(hr), batch: s.batch}
	return calib, holdout
}

// Head is the first n samples (all when n >= N).
func (s *Source) Head(n int) *Source { return s.sub(0, min(n, s.n)) }
