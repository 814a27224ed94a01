package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ecprune/ecprune/testmodels"
)

// cmdDeep writes testmodels.DeepMLP models of the given depths and one
// calibration file for them: the models of the layer-count scaling table
// in bench/RESULTS.md.
func cmdDeep(args []string) error {
	fs := flag.NewFlagSet("deep", flag.ExitOnError)
	width := fs.Int("width", 4, "width of every layer")
	samples := fs.Int("samples", 64, "calibration samples")
	nobias := fs.Bool("nobias", false, "layers without biases")
	fs.Parse(args)
	if fs.NArg() < 2 {
		return fmt.Errorf("deep DIR DEPTH...")
	}
	dir := fs.Arg(0)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, a := range fs.Args()[1:] {
		var depth int64
		if _, err := fmt.Sscan(a, &depth); err != nil || depth <= 0 {
			return fmt.Errorf("depth %q", a)
		}
		c := testmodels.DeepMLP(int64(*width), depth, !*nobias)
		path := filepath.Join(dir, c.Name+".onnx")
		if _, err := os.Stat(path); err == nil {
			continue // deterministic: already there
		}
		tmp := path + ".tmp"
		p, err := c.Write(tmp)
		if err != nil {
			return err
		}
		if err := os.Rename(p, path); err != nil {
			return err
		}
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
	}
	return genNormal(normalPath(dir, *samples, *width), *samples, *width, 1)
}
