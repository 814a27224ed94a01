package ecplus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// TestProgress: Options.Progress sees the phases in order, each from 0 to
// its total with done never decreasing, and the plan is the same bit for
// bit with and without it.
func TestProgress(t *testing.T) {
	cases := []struct {
		name   string
		mem    int
		prep   bool
		opt    prune.Options
		refit  int
		phases []string
		steps  []int // totals per phase
	}{
		// 31 samples; 3 layers, all pruned: 3 first passes + 3*3 rounds.
		{"resident", 1 << 25, false, prune.Options{Sparsity: 0.7}, 2, []string{PhaseDense, PhaseSelection, PhaseRefit}, []int{31, 12, 2}},
		{"streamed", 10, false, prune.Options{Sparsity: 0.7}, 1, []string{PhaseDense, PhaseSelection, PhaseRefit}, []int{31, 12, 1}},
		// With a Prep there is no pass over the dense model; a skipped
		// layer has only its first pass: 4 + 1 + 4.
		{"prep, skip, no refit", 1 << 25, true, prune.Options{Sparsity: 0.6, Skip: []string{"W1"}}, 0, []string{PhaseSelection}, []int{9}},
	}
	for k, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 10, tc.mem, 5e7)
			run := func(progress func(string, int, int)) *prune.Plan {
				rng := rand.New(rand.NewPCG(uint64(k), 5))
				net := mlp(rng, []int{5, 7, 6, 4}, onnxio.OpTanh, -1)
				data := randData(rng, 31, 5)
				eo := Options{Lambda: 1, C: 0.5, Rounds: 3, RefitSteps: tc.refit, Recon: ReconAuto, ReconDamp: 0.01, Progress: progress}
				sopt := analysis.StatsOptions{}
				if tc.prep {
					eo.Prep = NewPrep(net, data, analysis.TaskRegression)
					sopt.Observe = eo.Prep.Observe
				}
				st := collect(t, net, data, sopt)
				plan, err := Prune(net, data, st, ecScores(t, st), tc.opt, eo, analysis.TaskRegression, nil)
				if err != nil {
					t.Fatal(err)
				}
				return plan
			}
			type call struct {
				phase       string
				done, total int
			}
			var calls []call
			with := run(func(phase string, done, total int) { calls = append(calls, call{phase, done, total}) })
			plansEqual(t, with, run(nil))

			var phases []string
			var totals []int
			for q, c := range calls {
				if q == 0 || c.phase != calls[q-1].phase {
					if slices.Contains(phases, c.phase) {
						t.Fatalf("phase %s reported again after another: %v", c.phase, calls)
					}
					phases, totals = append(phases, c.phase), append(totals, c.total)
					if c.done != 0 {
						t.Errorf("phase %s starts at %d", c.phase, c.done)
					}
				} else if c.done < calls[q-1].done || c.total != calls[q-1].total {
					t.Errorf("phase %s: %d/%d after %d/%d", c.phase, c.done, c.total, calls[q-1].done, calls[q-1].total)
				}
				if c.done < 0 || c.done > c.total {
					t.Errorf("phase %s: done %d of %d", c.phase, c.done, c.total)
				}
				if last := q == len(calls)-1 || calls[q+1].phase != c.phase; last && c.done != c.total {
					t.Errorf("phase %s ends at %d of %d", c.phase, c.done, c.total)
				}
			}
			if fmt.Sprint(phases, totals) != fmt.Sprint(tc.phases, tc.steps) {
				t.Errorf("phases %v with totals %v, want %v %v", phases, totals, tc.phases, tc.steps)
			}
		})
	}
}
