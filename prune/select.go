package prune

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
)

// The selection order every method shares. METHOD.md ranks weights by
// score, then by position (layer order, then flat index in W), NaN last:
// CompareScored's order. Select, SparseGPT's masks and ec+ (package
// ecplus) all select in it, so that ties go the same way whatever the
// method.

// Scored is a score with the position that breaks its ties.
type Scored struct {
	Score float64
	Pos   int
}

// CompareScored orders by score then position; NaN sorts last. It is a
// total order on distinct positions.
func CompareScored(a, b Scored) int {
	an, bn := math.IsNaN(a.Score), math.IsNaN(b.Score)
	switch {
	case an && !bn:
		return 1
	case bn && !an:
		return -1
	case !an && a.Score != b.Score:
		return cmp.Compare(a.Score, b.Score)
	}
	return cmp.Compare(a.Pos, b.Pos)
}

// Smallest reorders cs so that cs[:k] are its k smallest elements by
// CompareScored, in no particular order: quickselect with a
// median-of-three pivot, sorting past a depth limit. CompareScored is a
// total order (positions differ), so which elements end up in cs[:k] is
// fully determined.
func Smallest(cs []Scored, k int) {
	if k <= 0 || k >= len(cs) {
		return
	}
	lo, hi := 0, len(cs)
	depth := 2 * bits.Len(uint(len(cs)))
	for hi-lo > 16 {
		if depth == 0 {
			break
		}
		depth--
		m := lo + (hi-lo)/2
		if CompareScored(cs[m], cs[lo]) < 0 {
			cs[m], cs[lo] = cs[lo], cs[m]
		}
		if CompareScored(cs[hi-1], cs[lo]) < 0 {
			cs[hi-1], cs[lo] = cs[lo], cs[hi-1]
		}
		if CompareScored(cs[hi-1], cs[m]) < 0 {
			cs[hi-1], cs[m] = cs[m], cs[hi-1]
		}
		cs[m], cs[hi-1] = cs[hi-1], cs[m] // the median is the pivot, at hi-1
		pivot := cs[hi-1]
		p := lo
		for i := lo; i < hi-1; i++ {
			if CompareScored(cs[i], pivot) < 0 {
				cs[i], cs[p] = cs[p], cs[i]
				p++
			}
		}
		cs[p], cs[hi-1] = cs[hi-1], cs[p]
		switch {
		case k == p || k == p+1:
			return
		case k < p:
			hi = p
		default:
			lo = p + 1
		}
	}
	slices.SortFunc(cs[lo:hi], CompareScored)
}

// Selection without a copy of the scores.
//
// The k smallest in CompareScored's order are every weight whose score is
// below the k-th smallest score t, and, among those whose score equals t,
// the first ones by position. So it is enough to find t, by a radix select
// over an order-preserving integer image of the scores (a few counting
// passes, no copy), then to mark in one pass in position order. Sorting or
// quickselecting (score, position) pairs would take 16 bytes per weight:
// 670 MB on a 42M-weight model.

// orderKey maps a score to a uint64 whose unsigned order is CompareScored's
// order of scores: -0 and +0 map to the same key (they compare equal), and
// every NaN to the largest key, above +Inf.
func orderKey(v float64) uint64 {
	if v != v {
		return math.MaxUint64
	}
	if v == 0 {
		v = 0 // -0 ties with +0
	}
	b := math.Float64bits(v)
	if b>>63 != 0 {
		return ^b
	}
	return b | 1<<63
}

// radixBits is the digit width of the radix select: 4 passes over the
// scores with 65536 counters.
const radixBits = 16

// kthKey finds the key t of the k-th smallest score (1 <= k <= the number
// of scores) over parts taken together, and how many of the k smallest
// have key t (the others have keys below t).
func kthKey(parts [][]float64, k int) (t uint64, atT int) {
	var counts [1 << radixBits]int
	var prefix, mask uint64
	rest := k // how many still to select among keys matching prefix
	for shift := 64 - radixBits; shift >= 0; shift -= radixBits {
		clear(counts[:])
		for _, p := range parts {
			if mask == 0 {
				for _, v := range p {
					counts[orderKey(v)>>shift]++
				}
				continue
			}
			for _, v := range p {
				if key := orderKey(v); key&mask == prefix {
					counts[(key>>shift)&(1<<radixBits-1)]++
				}
			}
		}
		d := 0
		for ; counts[d] < rest; d++ {
			rest -= counts[d]
		}
		prefix |= uint64(d) << shift
		mask |= (1<<radixBits - 1) << shift
	}
	return prefix, rest
}

// MarkSmallest marks the k smallest scores of parts taken together
// (positions numbered through the parts in order), in CompareScored's order:
// mark(part, index) is called in position order. It selects exactly what
// sorting (score, position) pairs and taking the first k would.
func MarkSmallest(parts [][]float64, k int, mark func(part, q int)) {
	if k <= 0 {
		return
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if k >= n {
		for b, p := range parts {
			for q := range p {
				mark(b, q)
			}
		}
		return
	}
	t, atT := kthKey(parts, k)
	for b, p := range parts {
		for q, v := range p {
			key := orderKey(v)
			if key < t {
				mark(b, q)
			} else if key == t && atT > 0 {
				atT--
				mark(b, q)
			}
		}
	}
}
