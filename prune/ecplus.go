package prune

import (
	"errors"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// ECPlusOptions are the knobs of ec+ (issue 7's recipe).
type ECPlusOptions struct {
	Lambda     float64 // g_i(n) += Lambda * mean_n g_i(n)
	C          float64 // weight of the residual-cancelling credit
	Rounds     int     // greedy rounds per layer
	RefitSteps int     // Levenberg-Marquardt steps on all biases
}

// RegisterFlags adds ec+'s flags with their defaults.
func (o *ECPlusOptions) RegisterFlags(fs *pflag.FlagSet) {
	fs.Float64Var(&o.Lambda, "ecplus-lambda", 1, "ec+: g_i(n) += lambda * mean_n g_i(n)")
	fs.Float64Var(&o.C, "ecplus-c", 0.5, "ec+: weight of the credit for removals that cancel upstream residuals")
	fs.IntVar(&o.Rounds, "ecplus-rounds", 4, "ec+: greedy rounds per layer")
	fs.IntVar(&o.RefitSteps, "ecplus-refit", 2, "ec+: Levenberg-Marquardt steps of the final bias refit (0: none)")
}

// ECPlus is sequential, error-aware EC with a Gauss-Newton bias refit.
func ECPlus(net *onnxio.Network, data analysis.Data, st *analysis.Stats, ec *analysis.Scores, opt Options, eo ECPlusOptions, task analysis.Task, logf func(string, ...any)) (*Plan, error) {
	return nil, errors.New("ec+ is being written")
}
