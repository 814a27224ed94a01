package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/ecprune/ecprune"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func init() {
	register(&command{
		name:    "version",
		summary: "print ecprune's version, Go version and build settings",
		usage:   "",
		run: func(e *env, args []string) error {
			blas, kernel := ecprune.BLAS()
			r := map[string]any{"version": version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH, "blas": blas, "kernel": kernel}
			settings := map[string]string{}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					settings[s.Key] = s.Value
				}
			}
			r["build"] = settings
			return e.output(r, func(w io.Writer) {
				fmt.Fprintf(w, "ecprune %s (%s %s/%s, matrix products: %s, kernel %s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH, blas, kernel)
				for _, k := range []string{"-tags", "CGO_ENABLED", "vcs.revision", "vcs.modified", "-ldflags"} {
					if v, ok := settings[k]; ok {
						fmt.Fprintf(w, "  %s=%s\n", k, v)
					}
				}
			})
		},
	})
}
