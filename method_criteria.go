package ecprune

import (
	"slices"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune"
)

// The statistics criteria of package analysis (ec, ec-nocomp, wanda,
// magnitude, taylor, gradient, random): each scores every weight once
// from the statistics, and selection ranks by the score. Those with a unit
// criterion of the same name also remove hidden units.
func init() {
	for _, name := range analysis.Criteria() {
		c, err := analysis.CriterionByName(name)
		if err != nil {
			panic(err) // analysis lists only its own criteria
		}
		d := criterionDocs[name]
		m := &Method{
			Name:        name,
			Help:        d.help,
			Baseline:    name != "ec",
			Needs:       Needs{Labels: c.NeedsLabels()},
			Compensates: c.Compensates(),
			Predicts:    name == "ec",
			DataFree:    d.dataFree,
			sweepRank:   d.sweepRank,
			score: func(s *session) (*analysis.Scores, error) {
				if s.oneShot {
					return analysis.ScoreConsuming(c, s.stats, s.opt.Seed)
				}
				return c.Score(s.stats, s.opt.Seed)
			},
		}
		m.plan = func(s *session, opt prune.Options) (*prune.Plan, error) { return s.selectScores(m, opt) }
		if slices.Contains(analysis.UnitMethods(), name) {
			m.units = func(s *session, u *unitRun) (*prune.UnitPlan, *analysis.UnitStats, error) {
				return s.unitCriterion(m, u)
			}
		}
		register(m)
	}
}

var criterionDocs = map[string]struct {
	help      string
	sweepRank int
	dataFree  bool
}{
	"ec":        {"the paper's one-shot method", 1, false},
	"ec-nocomp": {"EC's importance without the bias shift", 0, false},
	"magnitude": {"|w|", 3, false},
	"wanda":     {"|w| times the input's L2 norm", 4, false},
	"random":    {"seeded random scores", 5, true},
	"gradient":  {"|dL/dw| (needs labels)", 6, false},
	"taylor":    {"|w dL/dw| (needs labels)", 7, false},
}
