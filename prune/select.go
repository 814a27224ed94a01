package prune

import (
	"math"
)

// Selection without a copy of the scores.
//
// METHOD.md ranks weights by score, then by position (layer order, then
// flat index in W), NaN last: cmpScored's order. The k smallest in that
// order are every weight whose score is below the k-th smallest score t,
// and, among those whose score equals t, the first ones by position. So it
// is enough to find t, by a radix select over an order-preserving integer
// image of the scores (a few counting passes, no copy), then to mark in one
// pass in position order. Sorting or quickselecting (score, position)
// pairs needed 16 bytes per weight: 670 MB on a 42M-weight model.

// orderKey maps a score to a uint64 whose unsigned order is cmpScored's
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

// markSmallestParts marks the k smallest scores of parts taken together
// (positions numbered through the parts in order), in cmpScored's order:
// mark(part, index) is called in position order. It selects exactly what
// sorting (score, position) pairs and taking the first k would.
func markSmallestParts(parts [][]float64, k int, mark func(part, q int)) {
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
