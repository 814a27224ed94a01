package ecprune

import (
	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/ecplus"
)

// ec+ is the recommended method: EC's budgets, sequential error-aware
// selection on the already-pruned network, and an output-level refit of
// the biases (docs/METHOD.md). With Neuron granularity it removes units
// sequentially, each replaced by its mean or its least-squares
// prediction from the kept ones.
func init() {
	register(&Method{
		Name:        "ec+",
		Help:        "recommended: sequential EC with a bias refit",
		Recommended: true,
		Needs:       Needs{Derivatives: true, Sequential: true},
		Compensates: true,
		sweepRank:   2,
		base:        "ec",
		plan: func(s *session, opt prune.Options) (*prune.Plan, error) {
			if opt.NM != nil {
				return nil, s.opt.optErr("NM", "%s is not supported with ec+", s.opt.name("NM"))
			}
			ecs, err := s.scoresOf(lookup("ec"))
			if err != nil {
				return nil, err
			}
			eo := *s.opt.ECPlus
			eo.Prep = s.prep
			if s.oneShot {
				s.prep = nil // ec+ frees its caches before the refit
			}
			eo.Seed = s.opt.Seed // its own probes, if any, are the statistics'
			if s.oneShot && !s.keepScores {
				// ec+ needs the ec scores only for its budgets: once it
				// has them, nothing holds them (4 F on a large model).
				delete(s.scores, "ec")
			}
			// Each of ec+'s phases is a phase of the events.
			cur := ""
			eo.Progress = func(ph string, done, total int) {
				if ph != cur {
					if cur != "" {
						s.ev.End(cur)
					}
					cur = ph
				}
				s.ev.Progress(ph, done, total)
			}
			defer func() {
				if cur != "" {
					s.ev.End(cur)
				}
			}()
			return ecplus.Prune(s.net, s.data(), s.stats, ecs, opt, eo, s.ecplusTask(), debugf(s.ev))
		},
		units: func(s *session, u *unitRun) (*prune.UnitPlan, *analysis.UnitStats, error) {
			u.opt.Compensate = true
			u.opt.Reconstruct = !u.noReconstruct
			return prune.SequentialUnits(s.net, u.groups, s.data(), u.stats, u.opt, s.opt.ECPlus.Rounds)
		},
	})
}
