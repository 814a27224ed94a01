package main

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/ecplus"
)

// TestECPlusFlags: the flags default to ecplus.DefaultOptions and set
// every field.
func TestECPlusFlags(t *testing.T) {
	var o ecplus.Options
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	registerECPlusFlags(fs, &o)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o, ecplus.DefaultOptions()) {
		t.Errorf("defaults %+v, want %+v", o, ecplus.DefaultOptions())
	}
	if err := fs.Parse([]string{"--ecplus-rounds=2", "--ecplus-refit=0", "--ecplus-c=1", "--ecplus-lambda=0", "--ecplus-recon=off", "--ecplus-recon-damp=0.1"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o, ecplus.Options{Lambda: 0, C: 1, Rounds: 2, RefitSteps: 0, Recon: ecplus.ReconOff, ReconDamp: 0.1}) {
		t.Errorf("parsed %+v", o)
	}
}

// TestCLIMessage: option errors name the flag, wrapped or not; other
// errors pass unchanged.
func TestCLIMessage(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"sparsity", &prune.OptionError{Field: "Sparsity", Msg: "1.5 is outside [0, 1)"}, "--sparsity 1.5 is outside [0, 1)"},
		{"wrapped", fmt.Errorf("ec+: budgets: %w", &prune.OptionError{Field: "Scope", Msg: `"x": want global or layer`}), `ec+: budgets: --scope "x": want global or layer`},
		{"unknown layer", &prune.OptionError{Field: "Skip", Msg: "fc9: no such layer"}, "--skip fc9: no such layer (see ecprune inspect)"},
		{"ec+ rounds", &prune.OptionError{Field: "Rounds", Msg: "0: want at least 1"}, "--ecplus-rounds 0: want at least 1"},
		{"no field", &prune.OptionError{Msg: "SparseGPTOptions: bad"}, "SparseGPTOptions: bad"},
		{"other", fmt.Errorf("plain"), "plain"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := cliMessage(tc.err); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
