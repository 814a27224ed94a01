package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/ecprune/ecprune/onnxio"
)

// LayerScores are one layer's per-weight scores (lower: pruned first) and,
// for compensating criteria, the bias shift each removal brings.
type LayerScores struct {
	Layer *onnxio.Layer
	Score []float64 // Out x In
	Delta []float64 // Out x In, nil when the criterion does not compensate
}

// Scores are a criterion's scores for every prunable layer, graph order.
// A tied weight's dense uses each have their LayerScores; selection sums
// them per stored element, with the scores of its non-dense uses (Ties).
type Scores struct {
	Method string
	Layers []*LayerScores
	Ties   []*TieScores
	// TieMean: the scores are not additive over a tied weight's uses (a
	// magnitude is the same whichever reader looks), so selection takes
	// their mean rather than their sum.
	TieMean bool
	// Local are the layers whose scores are in the units of their local
	// objective (local.go), with the reason; selection ranks each of them
	// on its own. Nil when every layer's scores are output-level.
	Local map[*onnxio.Layer]string
}

// TieScores are the scores a tied weight's non-dense uses (embedding
// Gathers) add to its stored elements, in stored order.
type TieScores struct {
	Tie   *onnxio.Tie
	Score []float64
}

// Criterion scores weights from the calibration statistics. Criteria are
// comparable only within themselves: selection ranks by Score alone.
type Criterion interface {
	Name() string
	// NeedsLabels: the criterion uses the loss gradient.
	NeedsLabels() bool
	// Compensates: pruned weights shift the bias by Delta.
	Compensates() bool
	Score(st *Stats, seed uint64) (*Scores, error)
}

type funcCriterion struct {
	name       string
	labels     bool
	compensate bool
	score      func(ls *LayerStats, n int, layer int, seed uint64) (score, delta []float64)
	// inPlace, if set, is score written over the layer's S1/S2 (see
	// ScoreConsuming).
	inPlace func(ls *LayerStats, n int) (score, delta []float64)
	// ties: the scores are output-change importances, to which the
	// embedding uses of tied weights add theirs (tie.go); tieMean: the
	// scores are per-weight values that do not add up over uses.
	ties, tieMean bool
}

// finish adds what a criterion's scores say about tied weights.
func (c funcCriterion) finish(out *Scores, st *Stats) {
	out.TieMean = c.tieMean
	if c.ties {
		out.Ties = tieScores(st)
	}
}

func (c funcCriterion) Name() string      { return c.name }
func (c funcCriterion) NeedsLabels() bool { return c.labels }
func (c funcCriterion) Compensates() bool { return c.compensate }

func (c funcCriterion) Score(st *Stats, seed uint64) (*Scores, error) {
	if c.labels {
		for _, ls := range st.Layers {
			if ls.GradW == nil {
				return nil, fmt.Errorf("criterion %s needs labels", c.name)
			}
		}
	}
	out := &Scores{Method: c.name}
	for k, ls := range st.Layers {
		s, d := c.score(ls, st.N, k, seed)
		out.Layers = append(out.Layers, &LayerScores{Layer: ls.Layer, Score: s, Delta: d})
	}
	c.finish(out, st)
	out.Local = localScores(c.name, st)
	return out, nil
}

var criteria = map[string]Criterion{
	"ec": funcCriterion{name: "ec", compensate: true, score: func(ls *LayerStats, n, _ int, _ uint64) ([]float64, []float64) {
		return ls.ECImportance(n)
	}, inPlace: (*LayerStats).ECImportanceInPlace, ties: true},
	"ec-nocomp": funcCriterion{name: "ec-nocomp", score: func(ls *LayerStats, n, _ int, _ uint64) ([]float64, []float64) {
		return ls.NoCompImportance(n), nil
	}, inPlace: func(ls *LayerStats, n int) ([]float64, []float64) {
		return ls.NoCompImportanceInPlace(n), nil
	}, ties: true},
	"magnitude": funcCriterion{name: "magnitude", tieMean: true, score: func(ls *LayerStats, _, _ int, _ uint64) ([]float64, []float64) {
		s := make([]float64, ls.Layer.Params())
		for q := range s {
			s[q] = math.Abs(ls.Layer.At(q))
		}
		return s, nil
	}},
	"random": funcCriterion{name: "random", tieMean: true, score: func(ls *LayerStats, _, layer int, seed uint64) ([]float64, []float64) {
		// One stream per layer, so a layer's scores do not depend on the
		// sizes of the layers before it.
		r := rand.New(rand.NewPCG(seed, uint64(layer)+1))
		s := make([]float64, ls.Layer.Params())
		for q := range s {
			s[q] = r.Float64()
		}
		return s, nil
	}},
	"wanda": funcCriterion{name: "wanda", tieMean: true, score: func(ls *LayerStats, _, _ int, _ uint64) ([]float64, []float64) {
		l := ls.Layer
		s := make([]float64, l.Params())
		for i := 0; i < l.Out; i++ {
			for j := 0; j < l.In; j++ {
				s[i*l.In+j] = math.Abs(l.At(i*l.In+j)) * math.Sqrt(ls.SumA2[j])
			}
		}
		return s, nil
	}},
	"gradient": funcCriterion{name: "gradient", labels: true, score: func(ls *LayerStats, n, _ int, _ uint64) ([]float64, []float64) {
		s := make([]float64, len(ls.GradW))
		for q, g := range ls.GradW {
			s[q] = math.Abs(g) / float64(n)
		}
		return s, nil
	}},
	"taylor": funcCriterion{name: "taylor", labels: true, score: func(ls *LayerStats, n, _ int, _ uint64) ([]float64, []float64) {
		s := make([]float64, len(ls.GradW))
		for q, g := range ls.GradW {
			s[q] = math.Abs(ls.Layer.At(q)*g) / float64(n)
		}
		return s, nil
	}},
}

// CriterionByName returns a statistics-based criterion. "exact" is not one
// of them: it re-runs the network (see Exact).
func CriterionByName(name string) (Criterion, error) {
	if c, ok := criteria[name]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("unknown criterion %q (known: %s)", name, strings.Join(Criteria(), ", "))
}

// Criteria lists the statistics-based criteria by name.
func Criteria() []string {
	out := make([]string, 0, len(criteria))
	for k := range criteria {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
