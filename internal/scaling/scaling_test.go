package scaling

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/ecplus"
	"github.com/ecprune/ecprune/testmodels"
)

// Bounds on the growth from depth N to 4N (see the package doc).
const (
	maxTimeRatio  = 8.0
	maxAllocRatio = 6.0
)

// cost is what one run of a stage took.
type cost struct {
	cpu   time.Duration // user + system time of the process
	alloc uint64        // bytes allocated
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs f and returns its cost; the collector runs before, so
// that garbage of earlier stages is not charged to this one.
func measure(t *testing.T, f func() error) cost {
	t.Helper()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c0 := cpuTime()
	if err := f(); err != nil {
		t.Fatal(err)
	}
	c := cpuTime() - c0
	runtime.ReadMemStats(&m1)
	return cost{cpu: c, alloc: m1.TotalAlloc - m0.TotalAlloc}
}

// best is the cheapest of reps runs (CPU time; bytes of the same run).
func best(t *testing.T, reps int, f func() error) cost {
	t.Helper()
	var b cost
	for r := 0; r < reps; r++ {
		c := measure(t, f)
		if r == 0 || c.cpu < b.cpu {
			b = c
		}
	}
	return b
}

// checkGrowth compares the costs at depth n and 4n. Times under a few
// milliseconds are too coarse to compare; they pass when the larger one
// is below minTime too.
func checkGrowth(t *testing.T, stage string, n int, small, large cost) {
	t.Helper()
	const minTime = 20 * time.Millisecond
	tr := float64(large.cpu) / float64(max(small.cpu, time.Millisecond))
	ar := float64(large.alloc) / float64(max(small.alloc, 1))
	t.Logf("%s: depth %d: %v, %d KiB; depth %d: %v, %d KiB; ratios %.2f (time), %.2f (bytes)",
		stage, n, small.cpu, small.alloc>>10, 4*n, large.cpu, large.alloc>>10, tr, ar)
	if tr > maxTimeRatio && large.cpu > minTime {
		t.Errorf("%s: CPU time grows %.1fx from %d to %d layers (%v to %v): want at most %gx (linear is 4x)",
			stage, tr, n, 4*n, small.cpu, large.cpu, maxTimeRatio)
	}
	if ar > maxAllocRatio && large.alloc > 1<<20 {
		t.Errorf("%s: allocations grow %.1fx from %d to %d layers (%d to %d KiB): want at most %gx (linear is 4x)",
			stage, ar, n, 4*n, small.alloc>>10, large.alloc>>10, maxAllocRatio)
	}
}

// memData is calibration data in memory: one graph input [N, in].
type memData struct {
	x  []float64
	in int
}

func (d memData) Len() int { return len(d.x) / d.in }

func (d memData) Each(batch int, f func(analysis.Batch) error) error {
	for s := 0; s < d.Len(); s += batch {
		e := min(d.Len(), s+batch)
		x := append([]float64(nil), d.x[s*d.in:e*d.in]...)
		if err := f(analysis.Batch{Start: s, Inputs: []*analysis.Tensor{analysis.NewTensor([]int{e - s, d.in}, x)}}); err != nil {
			return err
		}
	}
	return nil
}

func normalData(samples, width int) memData {
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float64, samples*width)
	for q := range x {
		x[q] = float64(float32(r.NormFloat64()))
	}
	return memData{x: x, in: width}
}

const width = 4

// deep writes testmodels.DeepMLP(width, depth) and loads it.
func deep(t *testing.T, depth int) (*onnxio.Model, *onnxio.Network) {
	t.Helper()
	p, err := testmodels.DeepMLP(width, int64(depth), true).Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxio.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(net.Layers) != depth {
		t.Fatalf("depth %d: %d layers extracted", depth, len(net.Layers))
	}
	return m, net
}

// pipeline is one pruning run's stages at one depth.
type pipeline struct {
	load, collect, ec, ecplus, magnitude, export cost
}

func runPipeline(t *testing.T, depth, samples int, withECPlus bool) pipeline {
	t.Helper()
	var p pipeline
	var m *onnxio.Model
	var net *onnxio.Network
	dir := t.TempDir()
	path, err := testmodels.DeepMLP(width, int64(depth), true).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	p.load = measure(t, func() error {
		if m, err = onnxio.Load(path); err != nil {
			return err
		}
		net, err = onnxio.Extract(m, onnxio.ExtractOptions{})
		return err
	})
	data := normalData(samples, width)
	var st *analysis.Stats
	p.collect = measure(t, func() (err error) {
		st, err = analysis.Collect(net, data, analysis.StatsOptions{})
		return err
	})
	opt := prune.Options{Sparsity: 0.5, Scope: prune.Scope("global"), Compensate: true}
	var ecs *analysis.Scores
	var plan *prune.Plan
	p.ec = measure(t, func() error {
		c, err := analysis.CriterionByName("ec")
		if err != nil {
			return err
		}
		if ecs, err = c.Score(st, 0); err != nil {
			return err
		}
		plan, err = prune.Select(net, ecs, opt)
		return err
	})
	p.magnitude = measure(t, func() error {
		c, err := analysis.CriterionByName("magnitude")
		if err != nil {
			return err
		}
		sc, err := c.Score(st, 0)
		if err != nil {
			return err
		}
		mo := opt
		mo.Compensate = false
		_, err = prune.Select(net, sc, mo)
		return err
	})
	if withECPlus {
		p.ecplus = measure(t, func() error {
			_, err := ecplus.Prune(net, data, st, ecs, opt, ecplus.DefaultOptions(), analysis.TaskRegression, nil)
			return err
		})
	}
	p.export = measure(t, func() error {
		ups := make([]export.Update, 0, len(plan.Layers))
		for _, lp := range plan.Layers {
			ups = append(ups, export.Update{Layer: lp.Layer, W: lp.W, B: lp.B})
		}
		out, _, err := export.Apply(m, ups, export.Options{AddBias: true})
		if err != nil {
			return err
		}
		return export.Save(out, dir+"/pruned.onnx", 0)
	})
	return p
}

// TestPipelineLinearInDepth runs every stage of a pruning run at depths
// N and 4N. ec+ is compared at depths where its refit is matrix-free
// (more than ecpMaxDense = 4096 biases): below, the refit assembles and
// factors the Gauss-Newton matrix of all biases, cubic in their number
// but bounded by that cap. With -short the other stages run at smaller
// depths and ec+ is left out.
func TestPipelineLinearInDepth(t *testing.T) {
	n, withECPlus := 1100, true
	if testing.Short() {
		n, withECPlus = 150, false
	}
	small := runPipeline(t, n, 16, withECPlus)
	large := runPipeline(t, 4*n, 16, withECPlus)
	stages := []struct {
		name         string
		small, large cost
	}{
		{"load and extract", small.load, large.load},
		{"statistics", small.collect, large.collect},
		{"ec scores and selection", small.ec, large.ec},
		{"magnitude selection", small.magnitude, large.magnitude},
		{"export", small.export, large.export},
	}
	if withECPlus {
		stages = append(stages, struct {
			name         string
			small, large cost
		}{"ec+", small.ecplus, large.ecplus})
	}
	for _, s := range stages {
		checkGrowth(t, s.name, n, s.small, s.large)
	}
}

// TestUnitGroupsLinearInDepth: finding the removable units of every
// layer walks each layer's region, not the rest of the graph.
func TestUnitGroupsLinearInDepth(t *testing.T) {
	n := 2500
	if testing.Short() {
		n = 1000
	}
	var costs []cost
	for _, d := range []int{n, 4 * n} {
		_, net := deep(t, d)
		costs = append(costs, best(t, 3, func() error {
			gs := analysis.UnitGroups(net)
			if len(gs) != d {
				return fmt.Errorf("%d groups for %d layers", len(gs), d)
			}
			return nil
		}))
	}
	checkGrowth(t, "unit groups", n, costs[0], costs[1])
}

// TestJVPLinearInDepth: a forward derivative seeded at every layer's
// output (what ec+'s refit does with its biases) finds the seeds'
// producers in one scan.
func TestJVPLinearInDepth(t *testing.T) {
	n := 2500
	if testing.Short() {
		n = 1000
	}
	var costs []cost
	for _, d := range []int{n, 4 * n} {
		_, net := deep(t, d)
		data := normalData(1, width)
		tr, err := analysis.Run(net, []*analysis.Tensor{analysis.NewTensor([]int{1, width}, data.x)})
		if err != nil {
			t.Fatal(err)
		}
		var from []int
		var seeds []*analysis.Tensor
		for i := range net.Ops {
			if net.Ops[i].Kind == onnxio.OpDense {
				from = append(from, net.Ops[i].Out)
				seeds = append(seeds, analysis.NewTensor([]int{1, 1, width}, nil))
			}
		}
		// One JVP at depth n takes a few milliseconds, too short to time
		// against other work on the machine: each measurement runs eight.
		costs = append(costs, best(t, 3, func() error {
			for r := 0; r < 8; r++ {
				if _, err := analysis.JVPSum(net, tr, from, seeds); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	checkGrowth(t, "JVP seeded at every layer (8 runs)", n, costs[0], costs[1])
}
