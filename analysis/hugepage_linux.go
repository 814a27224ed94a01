package analysis

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page (x86-64 and arm64 with
// 4 KB base pages).
const hugePage = 2 << 20

// mapHuge returns n zeroed float64s in an anonymous mapping of their own
// (a whole number of 2 MB pages) advised to be backed by transparent huge
// pages, or ok false when the mapping fails. A fresh mapping has no page
// table yet, so every aligned 2 MB of it can get a huge page on its first
// touch, where memory from the Go heap takes a fault per 4 KB page (in a
// virtual machine, 64 MB took 0.4 to 1.3 s in 4 KB faults and 5 to 15 ms
// in huge pages). The memory is outside the Go heap: it must be given back
// with unmapHuge, once nothing references it.
func mapHuge(n int) (s []float64, ok bool) {
	size := (n*8 + hugePage - 1) &^ (hugePage - 1)
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, false
	}
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE) // a hint: without THP, 4 KB pages
	return unsafe.Slice((*float64)(unsafe.Pointer(unsafe.SliceData(b))), size/8)[:n], true
}

// unmapHuge releases a slice from mapHuge (any length, its full capacity).
func unmapHuge(s []float64) {
	_ = unix.Munmap(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), cap(s)*8))
}
