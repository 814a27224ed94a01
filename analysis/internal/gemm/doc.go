// Package gemm is the matrix product (GEMM) of the default, pure-Go build:
// Sgemm and Dgemm, with gonum's row-major BLAS conventions, behind the
// analysis package's products, and behind gonum's blas32.Gemm and
// blas64.Gemm in programs that call analysis.UseFastGemm.
//
// Why its own: the analysis spends nearly all its time in large matrix
// products, and gonum's pure-Go BLAS builds them from SSE2 vector loops
// (about 25 GFLOP/s float32 and 15 float64 on two Zen 5 cores, against a
// machine peak near 435 float32). With AVX-512 micro-kernels in Go
// assembly this package reaches about 410 GFLOP/s float32 and 200 float64
// there on large products, like OpenBLAS, and the default build needs no
// cgo. AVX2 kernels serve older x86 CPUs and a portable Go kernel the
// rest.
//
// Blocking (Goto, BLIS): for each nc-column panel of op(B) and each
// kc-deep slice of the sum, the kc x nc block of op(B) is packed once,
// into nr-column micro-panels (kc x nr, which the micro-kernel keeps in
// L1), shared by all workers; each worker packs mc x kc blocks of op(A)
// (in L2) into mr-row micro-panels, and the micro-kernel computes an
// mr x nr block of C in registers with one FMA per register per k.
// Transposes are absorbed by packing, so all four transpose cases run at
// the same speed; partial blocks at the edges are packed with zero
// padding and only their valid part is written back. Workers (GOMAXPROCS,
// for products large enough to pay for it) take row blocks of A, or parts
// of them by columns when there are fewer rows than workers.
//
// Determinism: the sum over k is never split among workers, and every
// element of C is computed with the same arithmetic (the kc slices in
// turn, each accumulated by the micro-kernel with FMA in k order, then
// alpha, then beta: partial edge blocks go through the same kernel on a
// padded copy) whatever the number of workers and whatever the shape of
// the product it belongs to. So results have the same bits for any
// GOMAXPROCS, and a row of C does not depend on how many other rows the
// product has (callers compare plans made from differently batched
// products bit for bit). They differ from gonum's, which sums in another
// order, by rounding.
package gemm
