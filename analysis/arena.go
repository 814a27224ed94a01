package analysis

import (
	"slices"
	"sync"
)

// arena recycles the float64 buffers of one batch's pass (the trace's
// values, the reverse pass's cotangents and derivative factors, the
// statistics' scratch) for the next batch, and takes its large buffers
// from huge pages (mapHuge). Freshly allocated memory costs a page fault
// per 4 KB page on its first touch, which on a convolutional network,
// whose trace is large next to its arithmetic, was most of the statistics
// pass; a recycled buffer is only cleared.
//
// Lifetimes are the owner's: reset returns every buffer handed out since
// the last reset, so it may only be called when nothing of the batch is
// referenced any more (Collect calls it after the batch's sums, and uses
// an arena only when no Observe callback can keep the trace); put returns
// one buffer earlier, when its caller knows it is dead; close unmaps the
// large buffers, after which nothing of the arena may be used. Buffers
// the arena did not hand out are never recycled, whatever is passed to
// put: a value that aliases a graph input, a constant or another value
// stays intact. Memory stays bounded by one batch: the buffers are the
// largest set one batch held at once, plus what a smaller last batch
// could not fit.
type arena struct {
	mu sync.Mutex
	// free holds the available buffers (full capacity) by capacity, and
	// caps those capacities in increasing order, so that a request takes
	// the smallest that fits in logarithmic time: a deep network hands
	// out thousands of buffers per batch, and a scan of every free one
	// per request made the pass quadratic in depth.
	free map[int][][]float64
	caps []int
	// used are the buffers handed out since the last reset (full
	// capacity), and usedAt their positions there by first element.
	used   [][]float64
	usedAt map[*float64]int
	mapped [][]float64 // from mapHuge, for close
}

// mapMin is the size in bytes from which the arena maps a buffer of its
// own in huge pages (rounded up to whole 2 MB pages, so at most half of
// such a mapping is slack) rather than taking it from the Go heap.
const mapMin = 1 << 20

// zeros returns a zeroed slice of n elements.
func (a *arena) zeros(n int) []float64 { return a.get(n, true) }

// raw returns a slice of n elements with arbitrary contents, for a caller
// that writes every element before reading any.
func (a *arena) raw(n int) []float64 { return a.get(n, false) }

func (a *arena) get(n int, zero bool) []float64 {
	if n == 0 {
		return []float64{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var b []float64
	if i, _ := slices.BinarySearch(a.caps, n); i < len(a.caps) {
		c := a.caps[i]
		stack := a.free[c]
		last := len(stack) - 1
		b = stack[last]
		stack[last] = nil
		if last == 0 {
			delete(a.free, c)
			a.caps = slices.Delete(a.caps, i, i+1)
		} else {
			a.free[c] = stack[:last]
		}
		if zero {
			clear(b[:n])
		}
	} else if m, ok := mapHugeAbove(n); ok {
		b = m
		a.mapped = append(a.mapped, m[:cap(m)])
	} else {
		b = make([]float64, n)
	}
	if a.usedAt == nil {
		a.usedAt = map[*float64]int{}
	}
	b = b[:cap(b)]
	a.usedAt[&b[0]] = len(a.used)
	a.used = append(a.used, b)
	return b[:n]
}

// pushFree puts a full-capacity buffer on the free lists. a.mu is held.
func (a *arena) pushFree(b []float64) {
	c := cap(b)
	if a.free == nil {
		a.free = map[int][][]float64{}
	}
	if len(a.free[c]) == 0 {
		i, _ := slices.BinarySearch(a.caps, c)
		a.caps = slices.Insert(a.caps, i, c)
	}
	a.free[c] = append(a.free[c], b)
}

// mapHugeAbove is mapHuge for buffers of at least mapMin bytes.
func mapHugeAbove(n int) ([]float64, bool) {
	if n*8 < mapMin {
		return nil, false
	}
	return mapHuge(n)
}

// close releases the mapped buffers. Nothing the arena handed out may be
// used afterwards, nor the arena itself.
func (a *arena) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range a.mapped {
		unmapHuge(m)
	}
	a.free, a.caps, a.used, a.usedAt, a.mapped = nil, nil, nil, nil, nil
}

// tensor is a zeroed tensor of the given shape from the arena.
func (a *arena) tensor(shape []int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), Data: a.zeros(ShapeSize(shape))}
}

// put returns b, which nothing references any more, for reuse. A slice
// the arena did not hand out (or that was put already) is ignored.
func (a *arena) put(b []float64) {
	if cap(b) == 0 {
		return
	}
	base := &b[:cap(b)][0]
	a.mu.Lock()
	defer a.mu.Unlock()
	i, ok := a.usedAt[base]
	if !ok || cap(a.used[i]) != cap(b) {
		return
	}
	u := a.used[i]
	last := len(a.used) - 1
	if i != last {
		a.used[i] = a.used[last]
		a.usedAt[&a.used[i][0]] = i
	}
	a.used[last] = nil
	a.used = a.used[:last]
	delete(a.usedAt, base)
	a.pushFree(u)
}

// reset makes every buffer handed out since the last reset available
// again.
func (a *arena) reset() {
	a.mu.Lock()
	for _, u := range a.used {
		a.pushFree(u)
	}
	clear(a.used)
	a.used = a.used[:0]
	clear(a.usedAt)
	a.mu.Unlock()
}

// allocFunc allocates a zeroed output tensor of a shape. Forward passes
// take one so that a caller owning the outputs' lifetimes can recycle
// them.
type allocFunc func(shape []int) *Tensor

// freshAlloc allocates from the Go heap: the outputs of a pass whose
// trace the caller keeps.
func freshAlloc(shape []int) *Tensor { return NewTensor(shape, nil) }

// alloc is the allocator of a nil-safe arena: fresh memory without one.
func (a *arena) alloc() allocFunc {
	if a == nil {
		return freshAlloc
	}
	return a.tensor
}

// rawAlloc is alloc for outputs whose every element the caller writes
// before reading any: a recycled buffer is not cleared.
func (a *arena) rawAlloc() allocFunc {
	if a == nil {
		return freshAlloc
	}
	return func(shape []int) *Tensor {
		return &Tensor{Shape: append([]int(nil), shape...), Data: a.raw(ShapeSize(shape))}
	}
}

// rawOrFresh is a.raw, or make without an arena.
func (a *arena) rawOrFresh(n int) []float64 {
	if a == nil {
		return make([]float64, n)
	}
	return a.raw(n)
}

// zerosOrFresh is a.zeros, or make without an arena.
func (a *arena) zerosOrFresh(n int) []float64 {
	if a == nil {
		return make([]float64, n)
	}
	return a.zeros(n)
}

// release is a.put for a nil-safe arena.
func (a *arena) release(b []float64) {
	if a != nil {
		a.put(b)
	}
}
