//go:build unix

package onnxio

import (
	"os"
	"syscall"
)

// openNonBlocking opens a file for reading without blocking on a named
// pipe that has no writer.
func openNonBlocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
