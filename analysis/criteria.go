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
type Scores struct {
	Method string
	Layers []*LayerScores
	// Local are the layers whose scores are in the units of their local
	// objective (local.go), with the reason; selection ranks each of them
	// on its own. Nil when every layer's scores are output-level.
	Local map[*onnxio.Layer]string
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
}

func (c funcCriterion) Name() string      { return c.name }
func (c funcCriterion) NeedsLabels() bool { return c.labels }
func (c funcCriterion) Compensates() bool { return c.compensate }

func (c funcCriterion) Score(st *Stats, seed uint64) (*Scores, error) {
	if c.labels {
		for _, ls := range st.Layers {
			if ls.GradW == nil {
				return nil, fmt.Errorf("criterion %s needs labels (--labels)", c.name)
			}
		}
	}
	out := &Scores{Method: c.name}
	for k, ls := range st.Layers {
		s, d := c.score(ls, st.N, k, seed)
		out.Layers = append(out.Layers, &LayerScores{Layer: ls.Layer, Score: s, Delta: d})
	}
	out.Local = localScores(c.name, st)
	return out, nil
}

var criteria = map[string]Criterion{
	"ec": funcCriterion{name: "ec", compensate: true, score: func(ls *LayerStats, n, _ int, _ uint64) ([]float64, []float64) {
		return ls.ECImportance(n)
	}, inPlace: (*LayerStats).ECImportanceInPlace},
	"ec-nocomp": funcCriterion{name: "ec-nocomp", score: func(ls *LayerStats, n, _ int, _ uint64) ([]float64, []float64) {
		return ls.NoCompImportance(n), nil
	}, inPlace: func(ls *LayerStats, n int) ([]float64, []float64) {
		return ls.NoCompImportanceInPlace(n), nil
	}},
	"magnitude": funcCriterion{name: "magnitude", score: func(ls *LayerStats, _, _ int, _ uint64) ([]float64, []float64) {
		s := make([]float64, ls.Layer.Params())
		for q := range s {
			s[q] = math.Abs(ls.Layer.At(q))
		}
		return s, nil
	}},
	"random": funcCriterion{name: "random", score: func(ls *LayerStats, _, layer int, seed uint64) ([]float64, []float64) {
		// One stream per layer, so a layer's scores do not depend on the
		// sizes of the layers before it.
		r := rand.New(rand.NewPCG(seed, uint64(layer)+1))
		s := make([]float64, ls.Layer.Params())
		for q := range s {
			s[q] = r.Float64()
		}
		return s, nil
	}},
	"wanda": funcCriterion{name: "wanda", score: func(ls *LayerStats, _, _ int, _ uint64) ([]float64, []float64) {
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
	return nil, fmt.Errorf("unknown method %q (known: %s)", name, strings.Join(Methods(), ", "))
}

// Methods lists every pruning method name, for help texts.
func Methods() []string {
	out := make([]string, 0, len(criteria)+2)
	for k := range criteria {
		out = append(out, k)
	}
	out = append(out, "exact", "ec+", "sparsegpt", "sparsegpt+bias")
	sort.Strings(out)
	return out
}

// NeedsLabels tells whether a method needs labels.
func NeedsLabels(method string) bool {
	c, ok := criteria[method]
	return ok && c.NeedsLabels()
}

// Compensates tells whether a method shifts biases.
func Compensates(method string) bool {
	switch method {
	case "exact", "ec+", "sparsegpt+bias":
		return true
	}
	c, ok := criteria[method]
	return ok && c.Compensates()
}

// Sequential tells whether a method prunes layer by layer on the network
// whose earlier layers are already pruned (package prune), from the
// per-layer counts of EC's ranking, rather than from a criterion's scores.
func Sequential(method string) bool {
	switch method {
	case "ec+", "sparsegpt", "sparsegpt+bias":
		return true
	}
	return false
}
