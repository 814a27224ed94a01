package ecprune

import (
	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune"
)

// exact re-runs the network with each weight removed and its bias
// shifted: the paper's expensive non-linear baseline, refused above the
// time budget unless forced, and compared by a sweep only when named.
func init() {
	m := &Method{
		Name:        "exact",
		Help:        "the real network re-run with each weight removed and its bias shifted (slow)",
		Baseline:    true,
		Compensates: true,
		score: func(s *session) (*analysis.Scores, error) {
			budget := s.opt.ExactBudget
			if s.opt.Force {
				budget = 0
			}
			p := startPhase(s.ev, "exact", 1)
			defer p.end()
			return analysis.Exact(s.net, s.data(), s.stats, analysis.ExactOptions{Batch: 1 << 30, Budget: budget, Progress: p.set, Log: logf(s.ev)})
		},
	}
	m.plan = func(s *session, opt prune.Options) (*prune.Plan, error) { return s.selectScores(m, opt) }
	register(m)
}
