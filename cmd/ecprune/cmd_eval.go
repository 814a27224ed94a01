package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune"
	"github.com/ecprune/ecprune/onnxio"
)

type evalFlags struct {
	dataFlags
	against string
	save    string
}

func init() {
	f := &evalFlags{}
	register(&command{
		name:    "eval",
		summary: "run a model with the built-in evaluator: loss, accuracy, error against another model",
		usage:   "MODEL --data X.npy [--labels Y.npy] [--against REF.onnx] [--save-outputs OUT.npy]",
		examples: []string{
			"ecprune eval pruned.onnx --data test_x.npy --labels test_y.npy --against model.onnx",
			"ecprune eval model.onnx --data x.npy --save-outputs y.npy",
		},
		flags: func(fs *pflag.FlagSet) {
			f.dataFlags.register(fs, "inputs: .npy (first axis = samples), .npz keyed by input name, or TensorProto .pb (required)",
				"labels (.npy class indices or float targets): loss and accuracy")
			fs.StringVar(&f.against, "against", "", "reference model: output MSE, max |diff| and argmax agreement against it")
			fs.StringVar(&f.save, "save-outputs", "", "save the first output for every sample to this .npy (float32, or float64 for float64 models)")
		},
		run: func(e *env, args []string) error { return runEval(e, f, args) },
		files: func(args []string) ([]fileRef, []fileRef) {
			in := append(refs("the model", args...), refs("--against", f.against)...)
			in = append(append(in, refs("--data", f.data...)...), refs("--labels", f.labels)...)
			return in, refs("--save-outputs", f.save)
		},
	})
}

type evalResult struct {
	Model   string           `json:"model"`
	Against string           `json:"against,omitempty"`
	Task    string           `json:"task,omitempty"`
	Quality *ecprune.Quality `json:"quality"`
	// Reference is --against's own loss and accuracy on the labels.
	Reference *ecprune.Quality `json:"reference,omitempty"`
	Saved     string           `json:"saved_outputs,omitempty"`
}

func runEval(e *env, f *evalFlags, args []string) error {
	if len(args) != 1 {
		return usagef("eval takes one model file")
	}
	if len(f.data) == 0 {
		return usagef("--data is required")
	}
	if err := f.check(); err != nil {
		return err
	}
	ld, err := e.loadModel(args[0], true)
	if err != nil {
		return err
	}
	var ref *loaded
	if f.against != "" {
		if ref, err = e.loadModel(f.against, true); err != nil {
			return err
		}
	}
	eo := f.options(e)
	eo.KeepOutputs = f.save != ""
	var refModel *ecprune.Model
	if ref != nil {
		refModel = ref.m
	}
	ev, err := ecprune.Evaluate(context.Background(), ld.m, refModel, f.dataSet(), eo)
	if err != nil {
		return cliError(err)
	}
	q := ev.Quality
	r := &evalResult{Model: args[0], Against: f.against, Task: string(ev.Task), Quality: q, Reference: ev.Reference}
	if f.save != "" {
		if err := e.stage.Write(f.save, ev.WriteOutputs); err != nil {
			return &onnxio.BadInputError{File: f.save, Msg: "cannot save: " + err.Error()}
		}
		r.Saved = f.save
	}
	return e.output(r, func(w io.Writer) {
		fmt.Fprintf(w, "%s: %d samples", r.Model, q.N)
		if q.Loss != nil {
			fmt.Fprintf(w, ", loss %.6g", *q.Loss)
		}
		if q.Accuracy != nil {
			fmt.Fprintf(w, ", accuracy %.4f", *q.Accuracy)
		}
		fmt.Fprintln(w)
		if q.MSE != nil {
			fmt.Fprintf(w, "against %s: output MSE %.6g, max |diff| %.6g", f.against, *q.MSE, *q.MaxAbs)
			if q.ArgmaxSame != nil {
				fmt.Fprintf(w, ", argmax agreement %.4f", *q.ArgmaxSame)
			}
			fmt.Fprintln(w)
		}
		if rq := r.Reference; rq != nil {
			fmt.Fprintf(w, "%s (reference): %d samples", f.against, rq.N)
			if rq.Loss != nil {
				fmt.Fprintf(w, ", loss %.6g", *rq.Loss)
			}
			if rq.Accuracy != nil {
				fmt.Fprintf(w, ", accuracy %.4f", *rq.Accuracy)
			}
			fmt.Fprintln(w)
		}
		if r.Saved != "" {
			fmt.Fprintf(w, "outputs saved to %s\n", r.Saved)
		}
	})
}
