//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

//go:generate go run gen_kernels.go

// The assembly micro-kernels (kernel_amd64.s) set the mr x nr block at c
// (row stride ldc elements) to alpha*A*B + beta*C, where A is a packed
// k x mr micro-panel (mr values per k) and B a packed k x nr one. With beta
// == 0, C is not read.

//go:noescape
func sgemmKernelAVX512(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func dgemmKernelAVX512(k int, a, b, c *float64, ldc int, alpha, beta float64)

// packBTAVX512s and packBTAVX512d pack a full nr-column micro-panel of
// op(B) = B^T, dst[p*nr+q] = b[q*ldb+p], for kc a multiple of 16 (float32)
// or 8 (float64), transposing square blocks in registers: about 10 times
// faster than scalar code, and this packing is a large part of the cost
// of x W^T when x has few rows.

//go:noescape
func packBTAVX512s(kc int, b *float32, ldb int, dst *float32)

//go:noescape
func packBTAVX512d(kc int, b *float64, ldb int, dst *float64)

//go:noescape
func sgemmKernelAVX2(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func dgemmKernelAVX2(k int, a, b, c *float64, ldc int, alpha, beta float64)

// Block sizes: kc x nr of packed B (the micro-panel reused by every
// micro-panel of the A block) about fills the 48 KiB L1d, mc x kc of
// packed A (300 to 500 KiB) stays in the 1 MiB L2, kc x nc of packed B
// (6 MiB) in L3. Measured on Zen 5, one thread: for the AVX-512 kernels
// kc = 384 beats 192 by 10-15% and 256 by a few percent (fewer passes over
// C), and mc between 112 and 504 is within noise.
var (
	sAVX512 = &kernel[float32]{name: "avx512", mr: 14, nr: 32, mc: 14 * 24, kc: 384, nc: 4096,
		fn: func(k int, a, b, c []float32, ldc int, alpha, beta float32) {
			_, _, _ = a[14*k-1], b[32*k-1], c[13*ldc+32-1] // the kernel's reach
			sgemmKernelAVX512(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
		},
		packBT: func(kc int, b []float32, ldb int, dst []float32) int {
			kb := kc &^ 15
			if kb > 0 {
				_, _ = b[31*ldb+kb-1], dst[32*kb-1]
				packBTAVX512s(kb, &b[0], ldb, &dst[0])
			}
			return kb
		}}
	dAVX512 = &kernel[float64]{name: "avx512", mr: 14, nr: 16, mc: 14 * 12, kc: 384, nc: 2048,
		fn: func(k int, a, b, c []float64, ldc int, alpha, beta float64) {
			_, _, _ = a[14*k-1], b[16*k-1], c[13*ldc+16-1] // the kernel's reach
			dgemmKernelAVX512(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
		},
		packBT: func(kc int, b []float64, ldb int, dst []float64) int {
			kb := kc &^ 7
			if kb > 0 {
				_, _ = b[15*ldb+kb-1], dst[16*kb-1]
				packBTAVX512d(kb, &b[0], ldb, &dst[0])
			}
			return kb
		}}
	sAVX2 = &kernel[float32]{name: "avx2", mr: 6, nr: 16, mc: 6 * 24, kc: 256, nc: 4096,
		fn: func(k int, a, b, c []float32, ldc int, alpha, beta float32) {
			_, _, _ = a[6*k-1], b[16*k-1], c[5*ldc+16-1] // the kernel's reach
			sgemmKernelAVX2(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
		}}
	dAVX2 = &kernel[float64]{name: "avx2", mr: 6, nr: 8, mc: 6 * 16, kc: 256, nc: 2048,
		fn: func(k int, a, b, c []float64, ldc int, alpha, beta float64) {
			_, _, _ = a[6*k-1], b[8*k-1], c[5*ldc+8-1] // the kernel's reach
			dgemmKernelAVX2(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
		}}
)

// available lists the kernels this CPU can run, fastest first.
func available() (s []*kernel[float32], d []*kernel[float64]) {
	x := cpu.X86
	if x.HasAVX512F && x.HasAVX512VL && x.HasFMA {
		s, d = append(s, sAVX512), append(d, dAVX512)
	}
	if x.HasAVX2 && x.HasFMA {
		s, d = append(s, sAVX2), append(d, dAVX2)
	}
	return append(s, sGeneric), append(d, dGeneric)
}
