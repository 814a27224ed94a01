package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
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
	Model   string            `json:"model"`
	Against string            `json:"against,omitempty"`
	Task    string            `json:"task,omitempty"`
	Quality *analysis.Quality `json:"quality"`
	// Reference is --against's own loss and accuracy on the labels.
	Reference *analysis.Quality `json:"reference,omitempty"`
	Saved     string            `json:"saved_outputs,omitempty"`
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
		if len(ref.net.Inputs) != len(ld.net.Inputs) || len(ref.net.Outputs) != len(ld.net.Outputs) {
			return &onnxio.BadInputError{File: f.against, Msg: "has other inputs or outputs than " + args[0]}
		}
	}
	src, labels, task, err := f.open(e, ld.net)
	if err != nil {
		return err
	}
	defer src.Close()
	r := &evalResult{Model: args[0], Against: f.against}
	if labels != nil {
		r.Task = string(task)
	}
	var saved []float64
	var savedShape []int
	collect := func(start int, outs []*analysis.Tensor) error {
		if f.save == "" {
			return nil
		}
		saved = append(saved, outs[0].Data...)
		if savedShape == nil {
			savedShape = append([]int{0}, outs[0].Shape[1:]...)
		}
		savedShape[0] += outs[0].Shape[0]
		return nil
	}
	var refNet *onnxio.Network
	if ref != nil {
		refNet = ref.net
	}
	q, err := analysis.Evaluate(ld.net, refNet, sourceData{Src: src}, labels, task, f.batch, collect)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	if labels != nil && task == analysis.TaskRegression {
		q.ArgmaxSame = nil // no classes: the agreement means nothing
	}
	r.Quality = q
	if refNet != nil && labels != nil {
		if r.Reference, err = analysis.Evaluate(refNet, nil, sourceData{Src: src}, labels, task, f.batch, nil); err != nil {
			return fmt.Errorf("%s: %w", f.against, err)
		}
	}
	if f.save != "" {
		f32 := true
		for _, l := range ld.net.Layers {
			if l.WeightType == onnxio.Double {
				f32 = false
			}
		}
		if err := e.stage.Write(f.save, func(w io.Writer) error { return calib.WriteNpy(w, saved, savedShape, f32) }); err != nil {
			return &calib.DataError{File: f.save, Msg: "cannot save", Err: err}
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
