// Command orteval measures ONNX models in ONNX Runtime (not ecprune's own
// evaluator) on a data set: test loss and accuracy for classifiers, mean
// squared error for regression. The README's result tables come from it,
// so that every reported number is what a deployment would see.
//
// Usage: go run ./testmodels/ort/orteval --data X.npy --labels Y.npy [--task classification|regression] [--table] MODEL...
// It prints one JSON object per model on stdout, or with --table a Markdown
// table of files named METHOD_sSPARSITY.onnx (as `ecprune sweep --save-dir`
// writes them): one row per method, one column per sparsity. It needs the ONNX Runtime
// library (ECPRUNE_ORT_LIB, or .ci/ort from scripts/setup-deps.sh).
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels/ort"
)

type result struct {
	Model    string   `json:"model"`
	Samples  int      `json:"samples"`
	Loss     float64  `json:"loss"`
	Accuracy *float64 `json:"accuracy,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "orteval:", err)
		os.Exit(1)
	}
}

func run() error {
	data := pflag.String("data", "", "inputs (.npy, first axis = samples)")
	labels := pflag.String("labels", "", "labels (.npy class indices or float targets)")
	task := pflag.String("task", "", "classification or regression (default: from the labels' type)")
	table := pflag.Bool("table", false, "print a Markdown table (rows: methods, columns: sparsities) instead of JSON lines")
	pflag.Parse()
	if *data == "" || *labels == "" || pflag.NArg() == 0 {
		return fmt.Errorf("usage: orteval --data X.npy --labels Y.npy MODEL...")
	}
	enc := json.NewEncoder(os.Stdout)
	var results []result
	for _, path := range pflag.Args() {
		m, err := onnxio.Load(path)
		if err != nil {
			return err
		}
		g := onnxio.NewGraph(m.Proto.Graph)
		if len(g.RealInputs) != 1 {
			return fmt.Errorf("%s: one input expected", path)
		}
		in := g.RealInputs[0]
		src, err := calib.Open([]string{*data}, []calib.InputSpec{{Name: in.GetName(), Shape: onnxio.ValueShape(in)}}, calib.Options{Batch: 1 << 20})
		if err != nil {
			return err
		}
		lab, err := src.LoadLabels(*labels)
		if err != nil {
			return err
		}
		b, err := src.ReadBatch(0, src.N())
		if err != nil {
			return err
		}
		src.Close()
		shape := make([]int64, len(b.Shapes[0]))
		for i, d := range b.Shapes[0] {
			shape[i] = int64(d)
		}
		outs, err := ort.Run(path, map[string]ort.Tensor{in.GetName(): {Shape: shape, Data: b.Inputs[0]}})
		if err != nil {
			return err
		}
		y := outs[m.Proto.Graph.Output[0].GetName()]
		n := b.N
		per := len(y.Data) / n
		r := result{Model: path, Samples: n}
		classify := *task == "classification" || (*task == "" && lab.Class != nil)
		correct := 0
		for s := 0; s < n; s++ {
			row := y.Data[s*per : (s+1)*per]
			if classify {
				c := lab.Class[s]
				mx, best := math.Inf(-1), 0
				for k, v := range row {
					if v > mx {
						mx, best = v, k
					}
				}
				var sum float64
				for _, v := range row {
					sum += math.Exp(v - mx)
				}
				r.Loss += mx + math.Log(sum) - row[c]
				if best == c {
					correct++
				}
			} else {
				for k, v := range row {
					d := v - lab.Target[s*per+k]
					r.Loss += d * d / float64(per)
				}
			}
		}
		r.Loss /= float64(n)
		if classify {
			a := float64(correct) / float64(n)
			r.Accuracy = &a
		}
		if *table {
			results = append(results, r)
			continue
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	if *table {
		printTable(results)
	}
	return nil
}

var sweepName = regexp.MustCompile(`^(.+)_s([0-9.]+)\.onnx$`)

// printTable lays out results of METHOD_sS.onnx files: "loss (accuracy)"
// per cell, the lowest loss of each column in bold. Other files (the dense
// model) come first as their own rows.
func printTable(rs []result) {
	cells := map[string]map[string]result{}
	var methods, sparsities []string
	var others []result
	for _, r := range rs {
		m := sweepName.FindStringSubmatch(filepath.Base(r.Model))
		if m == nil {
			others = append(others, r)
			continue
		}
		if cells[m[1]] == nil {
			cells[m[1]] = map[string]result{}
			methods = append(methods, m[1])
		}
		if !slices.Contains(sparsities, m[2]) {
			sparsities = append(sparsities, m[2])
		}
		cells[m[1]][m[2]] = r
	}
	sort.Strings(sparsities)
	cell := func(r result) string {
		if r.Accuracy != nil {
			return fmt.Sprintf("%.3f (%.1f%%)", r.Loss, 100**r.Accuracy)
		}
		return fmt.Sprintf("%.3g", r.Loss)
	}
	fmt.Print("| method |")
	for _, s := range sparsities {
		v, _ := strconv.ParseFloat(s, 64)
		fmt.Printf(" %g%% |", 100*v)
	}
	fmt.Print("\n|---|")
	for range sparsities {
		fmt.Print("---|")
	}
	fmt.Println()
	for _, r := range others {
		fmt.Printf("| %s (dense) |", strings.TrimSuffix(filepath.Base(r.Model), ".onnx"))
		for range sparsities {
			fmt.Printf(" %s |", cell(r))
		}
		fmt.Println()
	}
	best := map[string]float64{}
	for _, s := range sparsities {
		best[s] = math.Inf(1)
		for _, m := range methods {
			if r, ok := cells[m][s]; ok && r.Loss < best[s] {
				best[s] = r.Loss
			}
		}
	}
	for _, m := range methods {
		fmt.Printf("| %s |", m)
		for _, s := range sparsities {
			r, ok := cells[m][s]
			switch {
			case !ok:
				fmt.Print(" |")
			case r.Loss == best[s]:
				fmt.Printf(" **%s** |", cell(r))
			default:
				fmt.Printf(" %s |", cell(r))
			}
		}
		fmt.Println()
	}
}
