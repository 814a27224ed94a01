package ecprune

import (
	"github.com/ecprune/ecprune/prune"
)

// SparseGPT (Frantar and Alistarh, 2023) on EC's per-layer budgets, as a
// baseline: layer by layer, OBS updates of the kept weights of each row;
// sparsegpt+bias treats the bias as one more column.
func init() {
	for _, bias := range []bool{false, true} {
		name := "sparsegpt"
		help := "layer-wise OBS updates of the kept weights"
		if bias {
			name += "+bias"
			help += " and the bias"
		}
		register(&Method{
			Name:        name,
			Help:        help,
			Baseline:    true,
			Needs:       Needs{Sequential: true},
			Compensates: bias,
			base:        "ec",
			plan: func(s *session, opt prune.Options) (*prune.Plan, error) {
				if opt.NM != nil {
					return nil, s.opt.optErr("NM", "%s is not supported with %s", s.opt.name("NM"), name)
				}
				ecs, err := s.scoresOf(lookup("ec"))
				if err != nil {
					return nil, err
				}
				budget, err := prune.Select(s.net, ecs, opt)
				if err != nil {
					return nil, err
				}
				so := prune.DefaultSparseGPT
				so.Bias = bias
				return prune.SparseGPT(s.net, s.data(), s.stats, budget, so, debugf(s.ev))
			},
		})
	}
}
