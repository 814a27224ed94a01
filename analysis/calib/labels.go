package calib

import (
	"math"
)

// maxClass bounds class indices (anything larger is surely not a class).
const maxClass = math.MaxInt32

// Labels are the expected outputs for the samples, one per sample.
type Labels struct {
	// Class holds class indices when the file has an integer (or bool)
	// dtype and one value per sample (shape [N] or [N, 1, ...]); it is nil
	// for float targets and for integer arrays with several values per
	// sample.
	Class []int
	// Target holds the values as float64, row-major [N, TargetShape...]
	// (for class labels, the class indices as float64).
	Target      []float64
	TargetShape []int // per-sample shape, without the sample axis
	N           int
}

// LoadLabels loads class indices (.npy of any integer dtype) or targets
// (float16/32/64, shape [N] or [N, ...]) from path (.npy, single-array .npz
// or TensorProto .pb; first axis = samples). If n >= 0, the file must hold
// exactly n samples. Float targets may not contain NaN or Inf; class
// indices must be non-negative.
func LoadLabels(path string, n int) (*Labels, error) {
	l, err := loadLabels(path, n, "the data")
	if err != nil {
		return nil, err
	}
	if n >= 0 && l.N != n {
		return nil, dataErrf(path, "%d labels, expected %d (one per input sample)", l.N, n)
	}
	return l, nil
}

// LoadLabels loads labels for the samples of s (see the package function
// LoadLabels for the formats). The file must have one label per row of the
// data files; the labels returned are those of the samples of s, in order,
// so they follow Options.Limit and Split.
func (s *Source) LoadLabels(path string) (*Labels, error) {
	l, err := loadLabels(path, s.d.total, s.d.inputs[0].arr.desc())
	if err != nil {
		return nil, err
	}
	if l.N != s.d.total {
		return nil, dataErrf(path, "%d labels, but %s has %d samples (one label per sample needed)",
			l.N, s.d.inputs[0].arr.desc(), s.d.total)
	}
	per := 1
	for _, d := range l.TargetShape {
		per *= d
	}
	out := &Labels{TargetShape: l.TargetShape, N: s.n, Target: make([]float64, 0, s.n*per)}
	if l.Class != nil {
		out.Class = make([]int, 0, s.n)
	}
	for i := range s.n {
		r := s.Row(i)
		out.Target = append(out.Target, l.Target[r*per:(r+1)*per]...)
		if l.Class != nil {
			out.Class = append(out.Class, l.Class[r])
		}
	}
	return out, nil
}

// loadLabels reads a labels file; want > 0 is the number of samples they
// must match (ofWhat names that data), checked before any label is read.
func loadLabels(path string, want int, ofWhat string) (*Labels, error) {
	k, err := kindOf(path)
	if err != nil {
		return nil, err
	}
	var a *array
	switch k {
	case kindNpy:
		var c interface{ Close() error }
		a, c, err = openNpy(path)
		if err != nil {
			return nil, err
		}
		defer c.Close()
	case kindPb:
		a, _, err = openPb(path)
		if err != nil {
			return nil, err
		}
	default:
		z, err := openNpz(path)
		if err != nil {
			return nil, err
		}
		defer z.Close()
		names := z.arrayNames()
		if len(names) != 1 {
			return nil, dataErrf(path, "a labels .npz must hold exactly one array (arrays in the file: %s)", quoteList(names))
		}
		m, _ := z.member(names[0])
		if a, err = z.load(m); err != nil {
			return nil, err
		}
	}
	isInt := a.DT.isInteger()
	isFloat := a.DT.Kind == 'f' && (a.DT.Size == 2 || a.DT.Size == 4 || a.DT.Size == 8)
	if !isInt && !isFloat {
		return nil, dataErrf(path, "%sunsupported dtype %s for labels (want an integer type for class indices or float16/32/64 for targets)",
			a.what(), a.DT)
	}
	n, per := a.rows(), a.per()
	if want > 0 && n != want {
		return nil, dataErrf(path, "%d labels, expected %d: %s has %d samples (one label per sample needed)", n, want, ofWhat, want)
	}
	l := &Labels{N: n, TargetShape: append([]int{}, a.Shape[1:]...), Target: make([]float64, n*per)}
	if err := a.readRun(l.Target, 0, n); err != nil {
		return nil, dataErr(path, err, "%sreading labels", a.what())
	}
	if isFloat {
		for i, v := range l.Target {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, dataErrf(path, "%ssample %d: target is %v", a.what(), i/max(per, 1), v)
			}
		}
		return l, nil
	}
	if per != 1 {
		return l, nil // integer targets, e.g. one-hot
	}
	l.Class = make([]int, n)
	for i, v := range l.Target {
		if v < 0 || v > maxClass {
			return nil, dataErrf(path, "%ssample %d: class index %v out of range", a.what(), i, v)
		}
		l.Class[i] = int(v)
	}
	return l, nil
}
