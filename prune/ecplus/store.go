package ecplus

// vstore holds per-sample values of the original network (g or z0 of a
// layer) for ec+'s later passes. z0, and g from exact derivatives, are
// kept in float64, so that the results do not depend on whether they were
// kept; g from probes is an estimate whose sampling error (about
// 1/sqrt(P) relative) dwarfs float32 rounding, and is kept in float32,
// which makes the largest cache of a large model a quarter smaller.
type vstore struct {
	d64 []float64
	d32 []float32
	f32 bool
}

func newVStore(size int, f32 bool) *vstore {
	if f32 {
		return &vstore{d32: make([]float32, 0, size), f32: true}
	}
	return &vstore{d64: make([]float64, 0, size)}
}

func (s *vstore) append(v []float64) {
	if !s.f32 {
		s.d64 = append(s.d64, v...)
		return
	}
	for _, x := range v {
		s.d32 = append(s.d32, float32(x))
	}
}

func (s *vstore) len() int {
	if s.f32 {
		return len(s.d32)
	}
	return len(s.d64)
}

// slice returns values [lo, hi): the stored slice itself in float64 (not
// to be modified), else a conversion into buf.
func (s *vstore) slice(lo, hi int, buf *[]float64) []float64 {
	if !s.f32 {
		return s.d64[lo:hi]
	}
	d := grow(buf, hi-lo)
	for q, x := range s.d32[lo:hi] {
		d[q] = float64(x)
	}
	return d
}

// valueBytes is the size of one stored value.
func valueBytes(f32 bool) int {
	if f32 {
		return 4
	}
	return 8
}
