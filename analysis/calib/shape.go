package calib

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"slices"
)

// resolveSample matches the stored shape of an array (first axis =
// samples) against the declared full input shape (batch axis first, values
// <= 0 dynamic) and returns the per-sample shape the samples are given in.
// See the package documentation for the rules. A nil or empty declared
// shape accepts anything.
func resolveSample(decl []int64, data []int) ([]int, error) {
	got := data[1:]
	if len(decl) == 0 {
		return append([]int{}, got...), nil
	}
	want := decl[1:]
	dyn := 0
	for _, d := range want {
		if d <= 0 {
			dyn++
		}
	}
	// Same rank: every static dim must match.
	if len(want) == len(got) {
		ok := true
		for i, d := range want {
			if d > 0 && int64(got[i]) != d {
				ok = false
				break
			}
		}
		if ok {
			return append([]int{}, got...), nil
		}
	}
	size, _ := numElems(got)
	sqGot := squeeze(got)
	if dyn == 0 {
		wantInts := make([]int, len(want))
		wsize := 1
		for i, d := range want {
			wantInts[i] = int(d)
			if d > maxDataBytes || (wsize > 0 && int(d) > maxDataBytes/wsize) {
				return nil, mismatch(decl, data, "")
			}
			wsize *= int(d)
		}
		if wsize != size {
			return nil, mismatch(decl, data, "")
		}
		sqWant := squeeze(wantInts)
		if len(sqGot) <= 1 || len(sqWant) <= 1 || slices.Equal(sqGot, sqWant) {
			return wantInts, nil
		}
		return nil, mismatch(decl, data, fmt.Sprintf(
			"same number of values per sample (%d) but reshaping would be ambiguous; reorder the axes of the data to match", size))
	}
	out := make([]int, len(want))
	// A flat sample fills a single dynamic dim.
	if len(sqGot) <= 1 && dyn == 1 {
		q, at := 1, -1
		for i, d := range want {
			if d <= 0 {
				at = i
				continue
			}
			if int(d) > maxDataBytes/q {
				return nil, mismatch(decl, data, "")
			}
			q *= int(d)
			out[i] = int(d)
		}
		if size%q == 0 {
			out[at] = size / q
			return out, nil
		}
		return nil, mismatch(decl, data, "")
	}
	// Shapes that differ only by axes of size 1, dynamic dims matching any
	// stored dim (stored size-1 axes are dropped first, declared static
	// size-1 axes kept as 1).
	var pos []int // positions of want that take a stored dim
	for i, d := range want {
		if d != 1 {
			pos = append(pos, i)
		} else {
			out[i] = 1
		}
	}
	if len(pos) == len(sqGot) {
		ok := true
		for j, i := range pos {
			if want[i] > 0 && int64(sqGot[j]) != want[i] {
				ok = false
				break
			}
			out[i] = sqGot[j]
		}
		if ok {
			return out, nil
		}
	}
	return nil, mismatch(decl, data, "")
}

func mismatch(decl []int64, data []int, hint string) error {
	msg := fmt.Sprintf("expected %s (per sample %s), got %s",
		plain.Declared(decl), plain.DeclaredSample(decl[1:]), plain.Shape(data))
	if hint != "" {
		msg += ": " + hint
	}
	return fmt.Errorf("%s", msg)
}

func squeeze(s []int) []int {
	var out []int
	for _, d := range s {
		if d != 1 {
			out = append(out, d)
		}
	}
	return out
}
