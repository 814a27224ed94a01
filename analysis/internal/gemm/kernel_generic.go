package gemm

// The portable kernel, for CPUs without AVX2 and FMA and for other
// architectures: a 4 x 2 block in 8 scalar accumulators. Larger blocks
// run out of the 16 floating-point registers of amd64 (a 4 x 4 block,
// with its operands, spills and runs at half the speed).
var (
	sGeneric = &kernel[float32]{name: "generic", mr: 4, nr: 2, mc: 128, kc: 256, nc: 1024, fn: kernelGeneric[float32]}
	dGeneric = &kernel[float64]{name: "generic", mr: 4, nr: 2, mc: 128, kc: 256, nc: 1024, fn: kernelGeneric[float64]}
)

// kernelGeneric sets the 4 x 2 block at c to alpha*A*B + beta*C for packed
// micro-panels a (4 values per k) and b (2 values per k); with beta == 0
// C is not read.
func kernelGeneric[T float32 | float64](k int, a, b, c []T, ldc int, alpha, beta T) {
	var c00, c01, c10, c11, c20, c21, c30, c31 T
	a, b = a[:4*k], b[:2*k]
	// Advancing the slices (rather than indexing by p) lets the compiler
	// drop the bounds checks.
	for ; len(a) >= 4 && len(b) >= 2; a, b = a[4:], b[2:] {
		b0, b1 := b[0], b[1]
		a0 := a[0]
		c00 += a0 * b0
		c01 += a0 * b1
		a1 := a[1]
		c10 += a1 * b0
		c11 += a1 * b1
		a2 := a[2]
		c20 += a2 * b0
		c21 += a2 * b1
		a3 := a[3]
		c30 += a3 * b0
		c31 += a3 * b1
	}
	rows := [4][2]T{{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}}
	for i := range rows {
		row := c[i*ldc : i*ldc+2 : i*ldc+2]
		for j, v := range rows[i] {
			if beta == 0 {
				row[j] = alpha * v
			} else {
				row[j] = alpha*v + beta*row[j]
			}
		}
	}
}
