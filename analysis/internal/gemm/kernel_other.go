//go:build !amd64 || purego

package gemm

// available lists the kernels of this platform: the portable Go one only.
func available() (s []*kernel[float32], d []*kernel[float64]) {
	return []*kernel[float32]{sGeneric}, []*kernel[float64]{dGeneric}
}
