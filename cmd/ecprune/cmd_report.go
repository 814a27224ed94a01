package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune"
	"github.com/ecprune/ecprune/onnxio"
)

type reportFlags struct{ dataFlags }

func init() {
	f := &reportFlags{}
	register(&command{
		name:    "report",
		summary: "compare two models: size, weights, non-zeros, per-layer density, and output error on data",
		usage:   "BEFORE AFTER [--data X.npy [--labels Y.npy]]",
		examples: []string{
			"ecprune report model.onnx pruned.onnx",
			"ecprune report model.onnx pruned.onnx --data test_x.npy --labels test_y.npy --json",
		},
		flags: func(fs *pflag.FlagSet) {
			f.dataFlags.register(fs, "inputs to measure the output error of AFTER against BEFORE on",
				"labels of --data: loss and accuracy of both models")
		},
		run: func(e *env, args []string) error { return runReport(e, f, args) },
		files: func(args []string) ([]fileRef, []fileRef) {
			return append(append(refs("a model", args...), refs("--data", f.data...)...), refs("--labels", f.labels)...), nil
		},
	})
}

type reportLayer struct {
	Name           string  `json:"name"`
	Out            int     `json:"out"`
	In             int     `json:"in"`
	DensityBefore  float64 `json:"density_before"`
	DensityAfter   float64 `json:"density_after"`
	BiasShiftNorm  float64 `json:"bias_shift_norm"`
	BiasAddedAfter bool    `json:"bias_added,omitempty"`
}

type reportResult struct {
	Before  string        `json:"before"`
	After   string        `json:"after"`
	SizeB   sizeInfo      `json:"size_before"`
	SizeA   sizeInfo      `json:"size_after"`
	Layers  []reportLayer `json:"layers"`
	Quality *qualityPair  `json:"quality,omitempty"`
	Note    string        `json:"note"`
}

func runReport(e *env, f *reportFlags, args []string) error {
	if len(args) != 2 {
		return usagef("report takes two model files, BEFORE and AFTER")
	}
	if err := f.check(); err != nil {
		return err
	}
	b, err := e.loadModel(args[0], len(f.data) > 0)
	if err != nil {
		return err
	}
	a, err := e.loadModel(args[1], len(f.data) > 0)
	if err != nil {
		return err
	}
	if err := comparable(b, a); err != nil {
		return err
	}
	r := &reportResult{Before: args[0], After: args[1], Note: densifyNote}
	if r.SizeB, err = ecprune.ModelSize(b.m); err != nil {
		return err
	}
	if r.SizeA, err = ecprune.ModelSize(a.m); err != nil {
		return err
	}
	density := func(l *onnxio.Layer) float64 {
		return float64(l.NonZeros()) / float64(max(1, l.Params()))
	}
	// Layers are matched by position: pruning never adds or removes one.
	for i, lb := range b.net.Layers {
		rl := reportLayer{Name: lb.Name, Out: lb.Out, In: lb.In, DensityBefore: density(lb)}
		{
			la := a.net.Layers[i]
			rl.DensityAfter = density(la)
			var ss float64
			for o := 0; o < la.Out; o++ {
				var before, after float64
				if lb.B != nil {
					before = lb.B[o]
				}
				if la.B != nil {
					after = la.B[o]
				}
				ss += (after - before) * (after - before)
			}
			rl.BiasShiftNorm = math.Sqrt(ss)
			rl.BiasAddedAfter = lb.B == nil && la.B != nil
		}
		r.Layers = append(r.Layers, rl)
	}
	if len(f.data) > 0 {
		q, err := ecprune.Compare(context.Background(), b.m, a.m, f.dataSet(), f.options(e))
		if err != nil {
			return cliError(err)
		}
		r.Quality = q
	}
	return e.output(r, func(w io.Writer) {
		fmt.Fprintf(w, "%s -> %s\n", r.Before, r.After)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tbefore\tafter\tratio\t")
		fmt.Fprintf(tw, "size on disk\t%s\t%s\t%.3f\t\n", humanBytes(r.SizeB.Bytes), humanBytes(r.SizeA.Bytes), float64(r.SizeA.Bytes)/float64(max(1, r.SizeB.Bytes)))
		fmt.Fprintf(tw, "gzip size\t%s\t%s\t%.3f\t\n", humanBytes(r.SizeB.GzipBytes), humanBytes(r.SizeA.GzipBytes), float64(r.SizeA.GzipBytes)/float64(max(1, r.SizeB.GzipBytes)))
		fmt.Fprintf(tw, "dense weights\t%d\t%d\t\t\n", r.SizeB.Params, r.SizeA.Params)
		fmt.Fprintf(tw, "non-zeros\t%d\t%d\t%.3f\t\n", r.SizeB.NonZeros, r.SizeA.NonZeros, float64(r.SizeA.NonZeros)/float64(max(1, r.SizeB.NonZeros)))
		tw.Flush()
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nlayer\tW\tdensity before\tafter\t|bias shift|")
		for _, l := range r.Layers {
			fmt.Fprintf(tw, "%s\t%dx%d\t%.3f\t%.3f\t%.4g\n", l.Name, l.Out, l.In, l.DensityBefore, l.DensityAfter, l.BiasShiftNorm)
		}
		tw.Flush()
		if r.Quality != nil {
			fmt.Fprintln(w)
			printQuality(w, "data", *r.Quality)
		}
		fmt.Fprintf(w, "note: %s\n", r.Note)
	})
}

// comparable checks that AFTER is BEFORE with other weights: the same
// inputs, outputs and dense layers. Pruning never changes those, so a
// mismatch means the user named two unrelated models.
func comparable(b, a *loaded) error {
	bad := func(msg string) error {
		return &onnxio.BadInputError{File: a.path, Msg: msg + " than " + b.path + ": not a pruned version of it"}
	}
	if len(a.net.Inputs) != len(b.net.Inputs) || len(a.net.Outputs) != len(b.net.Outputs) {
		return bad("has other inputs or outputs")
	}
	for i := range a.net.Inputs {
		sa, sb := a.net.Inputs[i].Shape, b.net.Inputs[i].Shape
		if len(sa) != len(sb) {
			return bad("has inputs of another rank")
		}
		for d := 1; d < len(sa); d++ {
			if sa[d] != sb[d] && sa[d] > 0 && sb[d] > 0 {
				return bad("has inputs of another shape")
			}
		}
	}
	if len(a.net.Layers) != len(b.net.Layers) {
		return bad(fmt.Sprintf("has %d dense layers, not %d,", len(a.net.Layers), len(b.net.Layers)))
	}
	for i, lb := range b.net.Layers {
		if la := a.net.Layers[i]; la.Out != lb.Out || la.In != lb.In {
			return bad(fmt.Sprintf("has a layer %d of %dx%d, not %dx%d,", i, la.Out, la.In, lb.Out, lb.In))
		}
	}
	return nil
}
