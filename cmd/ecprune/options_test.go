package main

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune"
)

// TestECPlusFlags: the ec+ flags default to the library's recommended
// knobs and set every one of them.
func TestECPlusFlags(t *testing.T) {
	var o ecprune.ECPlusOptions
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	registerECPlusFlags(fs, &o)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o, ecprune.DefaultECPlusOptions()) {
		t.Errorf("defaults %+v, want %+v", o, ecprune.DefaultECPlusOptions())
	}
	if err := fs.Parse([]string{"--ecplus-rounds=2", "--ecplus-refit=0", "--ecplus-c=1", "--ecplus-lambda=0", "--ecplus-recon=off", "--ecplus-recon-damp=0.1", "--ecplus-budgets=refined"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o, ecprune.ECPlusOptions{Lambda: 0, C: 1, Rounds: 2, RefitSteps: 0, Recon: "off", ReconDamp: 0.1, Budgets: "refined"}) {
		t.Errorf("parsed %+v", o)
	}
}

// TestFlagNames: every option the library names in its messages has a
// flag.
func TestFlagNames(t *testing.T) {
	for _, o := range []string{"Sparsity", "Method", "Labels", "Inputs", "Force", "Limit", "Holdout", "Skip", "LayerSparsity", "NM", "NoNewBias", "Rounds", "Budgets", "Test.Labels", "SaveDir"} {
		if flagName(o) == "" {
			t.Errorf("option %s has no flag name", o)
		}
	}
}
