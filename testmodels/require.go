package testmodels

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// InCI reports whether $CI says this is a CI run.
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// RequireTool is the policy for outside references (ONNX Runtime, the
// ONNX checker, the operator test vectors): when err says the tool is
// missing, skip the test on a developer's machine but fail it in CI, where
// every comparison must run.
func RequireTool(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if !InCI() {
		t.Skipf("skipping %s: %v", what, err)
	}
	t.Fatalf("%s required in CI: %v", what, err)
}

// UnwritableDir returns an existing folder in which this process cannot
// create files, for tests of write errors that must also run as root (CI
// runs as root, which ignores permission bits): a read-only temporary
// folder for other users, and for root /sys, where sysfs refuses new files
// whoever asks. It skips the test (fails it in CI) when neither works.
func UnwritableDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	// Let TempDir's cleanup remove it whatever the test did.
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	for _, d := range []string{dir, "/sys"} {
		f, err := os.CreateTemp(d, ".unwritable-probe*")
		if err != nil {
			return d
		}
		f.Close()
		os.Remove(f.Name())
	}
	RequireTool(t, "an unwritable folder", errors.New("this process can write in a read-only folder and in /sys"))
	return ""
}
