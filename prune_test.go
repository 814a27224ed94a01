package ecprune

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recorder is an Events that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	logs   []string
	phases []string // "start analysis", "end analysis"
}

func (r *recorder) Log(m string)   { r.mu.Lock(); r.logs = append(r.logs, m); r.mu.Unlock() }
func (r *recorder) Debug(m string) {}
func (r *recorder) Progress(p string, done, total int) {
	if done == 0 {
		r.mu.Lock()
		r.phases = append(r.phases, "start "+p)
		r.mu.Unlock()
	}
}
func (r *recorder) End(p string) { r.mu.Lock(); r.phases = append(r.phases, "end "+p); r.mu.Unlock() }

func TestPruneEventsAndErrors(t *testing.T) {
	m, err := Load("testdata/models/pde_mlp.onnx")
	if err != nil {
		t.Fatal(err)
	}
	data := Data{Inputs: []string{"testdata/data/pde_calib_x.npy"}}
	ev := &recorder{}
	res, err := Prune(context.Background(), m, data, Options{Method: "exact", Sparsity: 0.5, Analysis: Analysis{Events: ev, Limit: 100}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if err := res.Save(filepath.Join(t.TempDir(), "p.onnx")); err != nil {
		t.Fatal(err)
	}
	if want := []string{"start analysis", "end analysis", "start exact", "end exact"}; !slices.Equal(ev.phases, want) {
		t.Errorf("phases %v, want %v", ev.phases, want)
	}
	if !slices.ContainsFunc(ev.logs, func(s string) bool { return strings.HasPrefix(s, "statistics of 4 layers over 100 samples") }) {
		t.Errorf("logs %q", ev.logs)
	}
	if r := res.Report; r.Removed == 0 || r.After.NonZeros >= r.Before.NonZeros || r.Calibration.Pruned.SqErr == nil {
		t.Errorf("report %+v", r)
	}
	for _, tc := range []struct {
		name   string
		d      Data
		opt    Options
		option string
	}{
		{"labels needed", data, Options{Method: "taylor"}, "Method"},
		{"no inputs", Data{}, Options{}, "Inputs"},
		{"loss without labels", data, Options{Analysis: Analysis{Objective: ObjLoss}}, "Objective"},
		{"no such layer", data, Options{Method: "ec", Skip: []string{"nope"}}, "Skip"},
		{"N:M with ec+", data, Options{NM: &NM{N: 2, M: 4}}, "NM"},
	} {
		_, err := Prune(context.Background(), m, tc.d, tc.opt)
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Option != tc.option {
			t.Errorf("%s: %v, want an *OptionError on %s", tc.name, err, tc.option)
		}
	}
}
