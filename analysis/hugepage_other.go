//go:build !linux

package analysis

// mapHuge is not available: the arena takes its buffers from the Go heap
// (see hugepage_linux.go).
func mapHuge(n int) ([]float64, bool) { return nil, false }

func unmapHuge(s []float64) {}
