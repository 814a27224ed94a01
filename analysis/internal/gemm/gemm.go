package gemm

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// kernel is a micro-kernel with the block sizes that suit it.
type kernel[T float32 | float64] struct {
	name   string
	mr, nr int // the micro-kernel's block of C
	mc     int // rows of A packed at a time (a multiple of mr)
	kc     int // depth of the packed panels
	nc     int // columns of B packed at a time (a multiple of nr)
	// fn sets the mr x nr block at c (row stride ldc) to alpha*A*B + beta*C
	// for packed micro-panels a (k x mr) and b (k x nr); with beta == 0
	// it does not read C.
	fn func(k int, a, b, c []T, ldc int, alpha, beta T)
	// packBT, if set, packs the first rows of a full micro-panel of
	// op(B) = B^T (kc x nr from b, stored nr x kc with stride ldb) faster
	// than packB, and returns how many it packed (packB does the rest).
	packBT func(kc int, b []T, ldb int, dst []T) int
}

// The kernels in use; tests set them to force each available one.
var kern32, kern64 = best()

func best() (*kernel[float32], *kernel[float64]) {
	s, d := available()
	return s[0], d[0]
}

// Kernel names the micro-kernels in use (float32, float64): "avx512",
// "avx2" or "generic".
func Kernel() (string, string) { return kern32.name, kern64.name }

// Below parallelWork multiply-adds, one goroutine does it all: the
// product takes less than a few tens of microseconds.
const parallelWork = 1 << 21

// Sgemm computes C = alpha*op(A)*op(B) + beta*C for row-major float32
// matrices, with gonum's blas32 conventions: op(A) is m x k (A is stored
// k x m when transA), op(B) is k x n (B is stored n x k when transB), C is
// m x n, and lda, ldb, ldc are row strides. With beta == 0, C is not read.
// It panics on bad dimensions, strides or short slices.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	check("Sgemm", transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	gemm(kern32, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Dgemm is Sgemm for float64.
func Dgemm(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	check("Dgemm", transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	gemm(kern64, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// stored is the shape in memory of an operand op(x) of rows x cols.
func stored(trans bool, rows, cols int) (int, int) {
	if trans {
		return cols, rows
	}
	return rows, cols
}

// check panics, like gonum's BLAS, on arguments that no product fits.
func check(fn string, transA, transB bool, m, n, k, la, lda, lb, ldb, lc, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("gemm.%s: negative dimension %dx%dx%d", fn, m, n, k))
	}
	ar, ac := stored(transA, m, k)
	br, bc := stored(transB, k, n)
	for _, x := range []struct {
		name           string
		rows, cols, ld int
		have           int
	}{{"a", ar, ac, lda, la}, {"b", br, bc, ldb, lb}, {"c", m, n, ldc, lc}} {
		if x.ld < max(1, x.cols) {
			panic(fmt.Sprintf("gemm.%s: bad stride %d for %s with %d columns", fn, x.ld, x.name, x.cols))
		}
		if m > 0 && n > 0 && x.rows > 0 && x.cols > 0 && x.have < (x.rows-1)*x.ld+x.cols {
			panic(fmt.Sprintf("gemm.%s: short %s: %d elements for %dx%d with stride %d", fn, x.name, x.have, x.rows, x.cols, x.ld))
		}
	}
}

func gemm[T float32 | float64](kn *kernel[T], transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scale(m, n, beta, c, ldc)
		return
	}
	blocked(kn, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// scale sets C = beta*C (C = 0 when beta == 0, whatever C held).
func scale[T float32 | float64](m, n int, beta T, c []T, ldc int) {
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// free32 and free64 recycle the packing buffers (several MiB for large
// products). They are short free lists rather than sync.Pools: a
// sync.Pool keeps buffers per P plus a victim generation, and on a
// 42M-weight analysis held 36 MB of 6 MB panels where one product needs
// one B panel and one A panel and scratch tile per worker.
var free32 freeList[float32]
var free64 freeList[float64]

type freeList[T float32 | float64] struct {
	mu   sync.Mutex
	bufs []*[]T
}

func freeFor[T float32 | float64]() *freeList[T] {
	var z T
	if f, ok := any(&free32).(*freeList[T]); ok && any(z) == any(float32(0)) {
		return f
	}
	return any(&free64).(*freeList[T])
}

// getBuf returns a buffer of n elements (contents undefined): the smallest
// free one that is large enough, else a new one.
func getBuf[T float32 | float64](n int) *[]T {
	f := freeFor[T]()
	f.mu.Lock()
	best := -1
	for i, p := range f.bufs {
		if cap(*p) >= n && (best < 0 || cap(*p) < cap(*f.bufs[best])) {
			best = i
		}
	}
	if best >= 0 {
		p := f.bufs[best]
		f.bufs = append(f.bufs[:best], f.bufs[best+1:]...)
		f.mu.Unlock()
		*p = (*p)[:n]
		return p
	}
	f.mu.Unlock()
	s := make([]T, n)
	return &s
}

// putBuf keeps p for reuse, up to what two products in flight need; a
// buffer beyond that goes to the collector.
func putBuf[T float32 | float64](p *[]T) {
	f := freeFor[T]()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bufs) < 4*runtime.GOMAXPROCS(0)+2 {
		f.bufs = append(f.bufs, p)
	}
}

// blocked is the Goto/BLIS product. For each nc-column panel of B and each
// kc-deep slice of k, the kc x nc block of op(B) is packed once (shared by
// all workers) into nr-column micro-panels; then the row blocks of op(A)
// are packed by the workers into mr-row micro-panels and multiplied against
// it by the micro-kernel. Packing handles the transposes, so that the
// kernel always reads contiguous memory. Every element of C is summed over
// k in the same order (kc slices in turn, each inside one kernel call)
// whatever the number of workers, so the result does not depend on it.
func blocked[T float32 | float64](kn *kernel[T], transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	mr, nr := kn.mr, kn.nr
	kc := min(kn.kc, k)
	nc := min(kn.nc, roundUp(n, nr))
	workers := 1
	if m*n*k >= parallelWork {
		workers = runtime.GOMAXPROCS(0)
	}
	// Row blocks: at most mc rows, in a multiple of workers of blocks of
	// equal size (so that no worker is left with a short last block, as
	// 512 rows in blocks of 336 and 176 would). Blocks start at multiples
	// of mr, so that which tiles are partial does not depend on the worker
	// count.
	mc := kn.mc
	if workers > 1 {
		nb := roundUp((m+mc-1)/mc, workers)
		mc = roundUp((m+nb-1)/nb, mr)
	}
	mBlocks := (m + mc - 1) / mc

	bp := getBuf[T](kc * nc)
	defer putBuf(bp)
	type scratch struct{ ap, tmp *[]T }
	scr := make([]scratch, workers)
	for w := range scr {
		scr[w] = scratch{getBuf[T](roundUp(mc, mr) * kc), getBuf[T](mr * nr)}
	}
	defer func() {
		for _, s := range scr {
			putBuf(s.ap)
			putBuf(s.tmp)
		}
	}()

	for jc := 0; jc < n; jc += nc {
		ncur := min(nc, n-jc)
		panels := (ncur + nr - 1) / nr
		// When there are fewer row blocks than workers, each row block is
		// also split by columns.
		nSplit := 1
		if mBlocks < workers {
			nSplit = min(panels, (workers+mBlocks-1)/mBlocks)
		}
		tasks := mBlocks * nSplit
		for pc := 0; pc < k; pc += kc {
			kcur := min(kc, k-pc)
			betaEff := beta
			if pc > 0 {
				betaEff = 1
			}
			parallel(min(workers, panels), func(w, nw int) {
				for jp := w; jp < panels; jp += nw {
					j, dst := jc+jp*nr, (*bp)[jp*nr*kcur:]
					done := 0
					if transB && kn.packBT != nil && n-j >= nr {
						done = kn.packBT(kcur, b[j*ldb+pc:], ldb, dst)
					}
					if done < kcur {
						packB(transB, b, ldb, pc+done, kcur-done, j, min(nr, n-j), nr, dst[done*nr:])
					}
				}
			})
			var next atomic.Int64
			parallel(min(workers, tasks), func(w, _ int) {
				ap, tmp := *scr[w].ap, *scr[w].tmp
				packed := -1
				for {
					t := int(next.Add(1)) - 1
					if t >= tasks {
						return
					}
					mb, ns := t/nSplit, t%nSplit
					i0 := mb * mc
					mcur := min(mc, m-i0)
					if packed != mb {
						packA(transA, a, lda, i0, mcur, pc, kcur, mr, ap)
						packed = mb
					}
					p0, p1 := ns*panels/nSplit, (ns+1)*panels/nSplit
					for jp := p0; jp < p1; jp++ {
						j := jc + jp*nr
						ncols := min(nr, n-j)
						bpan := (*bp)[jp*nr*kcur:]
						for ir := 0; ir < mcur; ir += mr {
							i := i0 + ir
							nrows := min(mr, m-i)
							apan := ap[ir*kcur:]
							if nrows == mr && ncols == nr {
								kn.fn(kcur, apan, bpan, c[i*ldc+j:], ldc, alpha, betaEff)
								continue
							}
							// A partial tile: run the kernel on a copy of
							// the valid part (the rest of tmp, whatever it
							// holds, is discarded), then copy it back. The
							// arithmetic is that of a full tile, so each
							// element of C gets the same bits whatever the
							// shape of the product it belongs to (the rows
							// of a batch do not depend on the batch size).
							if betaEff != 0 {
								for r := range nrows {
									copy(tmp[r*nr:r*nr+ncols], c[(i+r)*ldc+j:])
								}
							}
							kn.fn(kcur, apan, bpan, tmp, nr, alpha, betaEff)
							for r := range nrows {
								copy(c[(i+r)*ldc+j:(i+r)*ldc+j+ncols], tmp[r*nr:])
							}
						}
					}
				}
			})
		}
	}
}

// parallel runs f(w, nw) for w in [0, nw), on the calling goroutine when
// nw is 1.
func parallel(nw int, f func(w, nw int)) {
	if nw <= 1 {
		f(0, 1)
		return
	}
	var wg sync.WaitGroup
	for w := 1; w < nw; w++ {
		wg.Go(func() { f(w, nw) })
	}
	f(0, nw)
	wg.Wait()
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }

// packA packs rows [i0, i0+mcur) and columns [p0, p0+kc) of op(A) into
// dst as mr-row micro-panels, each kc x mr (the mr values of one k
// together), zero-padding the last panel to mr rows.
func packA[T float32 | float64](trans bool, a []T, lda, i0, mcur, p0, kc, mr int, dst []T) {
	for ir := 0; ir < mcur; ir += mr {
		rows := min(mr, mcur-ir)
		d := dst[ir*kc : ir*kc+mr*kc]
		if trans {
			// A is stored k x m: the mr values of one k are contiguous.
			panelFromRuns(a, lda, p0, kc, i0+ir, rows, mr, d)
		} else {
			panelFromLines(a, lda, i0+ir, rows, p0, kc, mr, d)
		}
	}
}

// packB packs rows [p0, p0+kc) and columns [j, j+cols) of op(B) into dst
// as one kc x nr micro-panel, zero-padding to nr columns.
func packB[T float32 | float64](trans bool, b []T, ldb, p0, kc, j, cols, nr int, dst []T) {
	if trans {
		// B is stored n x k: column j of op(B) is row j of B.
		panelFromLines(b, ldb, j, cols, p0, kc, nr, dst[:kc*nr])
	} else {
		panelFromRuns(b, ldb, p0, kc, j, cols, nr, dst[:kc*nr])
	}
}

// panelFromRuns fills the kc x width panel d (row p at d[p*width:]) from
// kc stored rows of src, taking count contiguous values from column c0
// of each, and zero-pads each row to width.
func panelFromRuns[T float32 | float64](src []T, ld, p0, kc, c0, count, width int, d []T) {
	for p := range kc {
		dp := d[p*width : p*width+width]
		copy(dp, src[(p0+p)*ld+c0:(p0+p)*ld+c0+count])
		clear(dp[count:])
	}
}

// panelFromLines fills the kc x width panel d with the transpose of count
// stored rows of src (from row r0, columns [p0, p0+kc)): d[p*width+r] =
// src[(r0+r)*ld+p0+p], zero-padding to width. Four rows at a time, so
// that each store run is four elements long and each row is read
// sequentially.
func panelFromLines[T float32 | float64](src []T, ld, r0, count, p0, kc, width int, d []T) {
	if count < width {
		clear(d[:kc*width])
	}
	r := 0
	for ; r+4 <= count; r += 4 {
		s0 := src[(r0+r)*ld+p0 : (r0+r)*ld+p0+kc]
		s1 := src[(r0+r+1)*ld+p0 : (r0+r+1)*ld+p0+kc]
		s2 := src[(r0+r+2)*ld+p0 : (r0+r+2)*ld+p0+kc]
		s3 := src[(r0+r+3)*ld+p0 : (r0+r+3)*ld+p0+kc]
		for p := range kc {
			o := d[p*width+r : p*width+r+4 : p*width+r+4]
			o[0], o[1], o[2], o[3] = s0[p], s1[p], s2[p], s3[p]
		}
	}
	for ; r < count; r++ {
		for p, v := range src[(r0+r)*ld+p0 : (r0+r)*ld+p0+kc] {
			d[p*width+r] = v
		}
	}
}
