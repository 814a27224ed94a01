// Command ecbench is the benchmark harness of ecprune (see bench/README.md).
//
//	ecbench gen DIR                 write the generated models and data into DIR
//	ecbench analyze MODEL X.npy     time the ec analysis in this process
//	ecbench ecplus MODEL X.npy      time ec+ against the ec analysis in this process
//	ecbench run [flags]             run everything and print the tables
//	ecbench deep DIR DEPTH...       write deep chains of tiny layers (layer-count scaling)
package main

import (
	"fmt"
	"os"

	"github.com/ecprune/ecprune/analysis"
)

func main() {
	// The products of ec+ (package prune) on the same kernels as ecprune's.
	analysis.UseFastGemm()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ecbench gen|analyze|ecplus|run|deep ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = cmdGen(os.Args[2:])
	case "analyze":
		err = cmdAnalyze(os.Args[2:])
	case "ecplus":
		err = cmdECPlus(os.Args[2:])
	case "run":
		err = cmdRun(os.Args[2:])
	case "deep":
		err = cmdDeep(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ecbench:", err)
		os.Exit(1)
	}
}
