package ecprune

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	names := MethodNames()
	want := []string{"ec+", "ec", "ec-nocomp", "exact", "gradient", "magnitude", "random", "sparsegpt", "sparsegpt+bias", "taylor", "wanda"}
	if !slices.Equal(names, want) {
		t.Errorf("methods %v, want %v", names, want)
	}
	if r := Recommended(); r.Name != "ec+" || !r.Needs.Derivatives || !r.Needs.Sequential || !r.Units() {
		t.Errorf("recommended %+v", r)
	}
	for _, tc := range []struct {
		name                    string
		labels, seq, comp, unit bool
	}{
		{"ec", false, false, true, true},
		{"ec-nocomp", false, false, false, true},
		{"taylor", true, false, false, false},
		{"gradient", true, false, false, false},
		{"exact", false, false, true, false},
		{"sparsegpt", false, true, false, false},
		{"sparsegpt+bias", false, true, true, false},
		{"random", false, false, false, true},
	} {
		m, err := MethodByName(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if m.Needs.Labels != tc.labels || m.Needs.Sequential != tc.seq || m.Compensates != tc.comp || m.Units() != tc.unit {
			t.Errorf("%s: %+v", tc.name, m)
		}
		if m.plan == nil || (m.score == nil && lookup(m.base) == nil) {
			t.Errorf("%s: no way to run", tc.name)
		}
	}
	var got []string
	for _, m := range SweepMethods(false) {
		got = append(got, m.Name)
	}
	if !slices.Equal(got, []string{"ec", "ec+", "magnitude", "wanda", "random"}) {
		t.Errorf("sweep defaults %v", got)
	}
	if h := MethodHelp(); !strings.HasPrefix(h, "ec+ (recommended") || !strings.Contains(h, "or a baseline: ") {
		t.Errorf("help %q", h)
	}
}

func TestMethodByName(t *testing.T) {
	for _, tc := range []struct{ in, want, suggest string }{
		{"", "ec+", ""},
		{"wanda", "wanda", ""},
		{"ec_plus", "", ""},
		{"magnitud", "", "magnitude"},
		{"EC+", "", "ec+"},
		{"nonsense-name", "", ""},
	} {
		m, err := MethodByName(tc.in)
		var ue *UnknownMethodError
		switch {
		case tc.want != "":
			if err != nil || m.Name != tc.want {
				t.Errorf("%q: %v, %v", tc.in, m, err)
			}
		case !errors.As(err, &ue) || ue.Suggest != tc.suggest:
			t.Errorf("%q: %v, want a suggestion %q", tc.in, err, tc.suggest)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	names := func(o string) string { return "--" + strings.ToLower(o) }
	for _, tc := range []struct {
		name   string
		opt    Options
		option string // "" for valid
		msg    string
	}{
		{"zero value", Options{}, "", ""},
		{"recommended at 0.9", Options{Sparsity: 0.9}, "", ""},
		{"percentage", Options{Sparsity: 80}, "Sparsity", "Sparsity 80 is a fraction of the weights, in [0, 1): for 80% write 0.8"},
		{"above 100", Options{Sparsity: 150}, "Sparsity", "Sparsity 150 is outside [0, 1)"},
		{"unknown method", Options{Method: "magnitud"}, "Method", "did you mean magnitude?"},
		{"bad N:M", Options{Method: "ec", NM: &NM{N: 5, M: 4}}, "NM", "NM 5:4"},
		{"N:M replaces sparsity", Options{Method: "wanda", NM: &NM{N: 2, M: 4}, Sparsity: 3}, "", ""},
		{"N:M with a sequential method", Options{Method: "sparsegpt", NM: &NM{N: 2, M: 4}}, "NM", "NM is not supported with sparsegpt"},
		{"layer sparsity", Options{LayerSparsity: map[string]float64{"fc1": 1.5}}, "LayerSparsity", "LayerSparsity fc1 1.5"},
		{"scope", Options{Scope: "row"}, "Scope", `Scope "row"`},
		{"granularity", Options{Granularity: "channel"}, "Granularity", `Granularity "channel"`},
		{"neuron taylor", Options{Granularity: Neuron, Method: "taylor"}, "Method", "not available with Granularity neuron"},
		{"neuron N:M", Options{Granularity: Neuron, NM: &NM{N: 2, M: 4}}, "NM", "does not apply"},
		{"neuron forward", Options{Granularity: Neuron, Analysis: Analysis{AD: ADForward}}, "AD", "reverse mode only"},
		{"neuron ec+", Options{Granularity: Neuron, Sparsity: 0.3}, "", ""},
		{"holdout NaN", Options{Analysis: Analysis{Holdout: nan()}}, "Holdout", "Holdout NaN"},
		{"probes", Options{Analysis: Analysis{Probes: -1}}, "Probes", "Probes -1"},
		{"objective", Options{Analysis: Analysis{Objective: "accuracy"}}, "Objective", "want output or loss"},
		{"external data", Options{ExternalData: -5}, "ExternalData", "ExternalData -5"},
		{"format", Options{Format: "zip"}, "Format", "Format"},
		{"named by the caller", Options{Sparsity: 2, Analysis: Analysis{OptionNames: names}}, "Sparsity", "--sparsity 2 is"},
	} {
		err := tc.opt.Validate()
		if tc.option == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Option != tc.option || !strings.Contains(oe.Msg, tc.msg) || !IsBadInput(err) {
			t.Errorf("%s: %v, want an *OptionError on %s saying %q", tc.name, err, tc.option, tc.msg)
		}
	}
}

func nan() float64 { return math.NaN() }
