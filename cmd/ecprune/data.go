package main

import (
	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune"
)

// dataFlags are the evaluation-data flags of eval and report.
type dataFlags struct {
	data   []string
	labels string
	task   string
	batch  int
	limit  int
}

func (f *dataFlags) register(fs *pflag.FlagSet, dataHelp, labelsHelp string) {
	fs.StringSliceVar(&f.data, "data", nil, dataHelp)
	fs.StringVar(&f.labels, "labels", "", labelsHelp)
	fs.StringVar(&f.task, "task", "", "classification or regression; default: from the labels' type")
	fs.IntVar(&f.batch, "batch", 256, "samples per batch")
	fs.IntVar(&f.limit, "limit", 0, "use at most this many samples (0: all)")
}

// evalNames names the evaluation options by their flags.
var evalNames = map[string]string{"Inputs": "--data", "Labels": "--labels", "Task": "--task"}

// options are the library's evaluation options of the flags.
func (f *dataFlags) options(e *env) ecprune.EvalOptions {
	return ecprune.EvalOptions{Task: ecprune.Task(f.task), Batch: f.batch, Limit: f.limit, Events: &cliEvents{e: e},
		OptionNames: func(o string) string { return evalNames[o] }}
}

func (f *dataFlags) check() error {
	return cliError(ecprune.EvalOptions{Task: ecprune.Task(f.task), OptionNames: func(o string) string { return evalNames[o] }}.Validate())
}

// dataSet is the data of the flags.
func (f *dataFlags) dataSet() ecprune.Data { return ecprune.Data{Inputs: f.data, Labels: f.labels} }
