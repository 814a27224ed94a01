package onnxio

import (
	"os"
	"path/filepath"
)

// SameFile reports whether a and b are the same file: the same real path
// (links resolved; for a file that does not exist yet, its folder's real
// path and its name) or, for existing files, the same inode. Writers use
// it to refuse an output that would overwrite one of their inputs.
func SameFile(a, b string) bool {
	if realPath(a) == realPath(b) {
		return true
	}
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		if a, err := filepath.Abs(r); err == nil {
			return a
		}
	}
	dir, base := filepath.Split(p)
	if dir == "" {
		dir = "."
	}
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	a, _ := filepath.Abs(filepath.Join(dir, base))
	return a
}
