package main

import (
	"errors"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/ecplus"
)

// registerECPlusFlags adds ec+'s flags, defaulting to
// ecplus.DefaultOptions.
func registerECPlusFlags(fs *pflag.FlagSet, o *ecplus.Options) {
	d := ecplus.DefaultOptions()
	fs.Float64Var(&o.Lambda, "ecplus-lambda", d.Lambda, "ec+: g_i(n) += lambda * mean_n g_i(n)")
	fs.Float64Var(&o.C, "ecplus-c", d.C, "ec+: weight of the credit for removals that cancel upstream residuals")
	fs.IntVar(&o.Rounds, "ecplus-rounds", d.Rounds, "ec+: greedy rounds per layer")
	fs.IntVar(&o.RefitSteps, "ecplus-refit", d.RefitSteps, "ec+: Levenberg-Marquardt steps of the final bias refit (0: none)")
	fs.StringVar(&o.Recon, "ecplus-recon", d.Recon, "ec+: least-squares reconstruction of the kept weights: auto (where it lowers the error on held-out calibration samples), on, off")
	fs.Float64Var(&o.ReconDamp, "ecplus-recon-damp", d.ReconDamp, "ec+: reconstruction damping, relative to the mean diagonal of the inputs' Gram matrix")
}

// optionFlags names the flag that sets each option field the library's
// OptionErrors name (prune.Options, prune.UnitOptions, ecplus.Options).
var optionFlags = map[string]string{
	"Sparsity":      "--sparsity",
	"Scope":         "--scope",
	"NM":            "--nm",
	"Skip":          "--skip",
	"LayerSparsity": "--layer-sparsity",
	"Lambda":        "--ecplus-lambda",
	"C":             "--ecplus-c",
	"Rounds":        "--ecplus-rounds",
	"RefitSteps":    "--ecplus-refit",
	"Recon":         "--ecplus-recon",
	"ReconDamp":     "--ecplus-recon-damp",
}

// cliMessage is err's message with a bad option named by its flag rather
// than its field, and a pointer to inspect for an unknown layer.
func cliMessage(err error) string {
	msg := err.Error()
	var o *prune.OptionError
	if !errors.As(err, &o) {
		return msg
	}
	flag, ok := optionFlags[o.Field]
	if !ok {
		return msg
	}
	cli := flag + " " + o.Msg
	if strings.HasSuffix(o.Msg, ": no such layer") {
		cli += " (see ecprune inspect)"
	}
	return strings.Replace(msg, o.Error(), cli, 1)
}
