package analysis

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels"
)

// caseNet extracts a testmodels case.
func caseNet(t *testing.T, name string) (*onnxio.Network, testmodels.Case) {
	t.Helper()
	c, ok := testmodels.ByName(name)
	if !ok {
		t.Fatalf("no test model %s", name)
	}
	b, err := proto.Marshal(c.Model)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxio.Parse(b, name)
	if err != nil {
		t.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(net); err != nil {
		t.Fatal(err)
	}
	return net, c
}

// localCases: which layers of each model use their local objective, and
// the op their reason must name.
var localCases = []struct {
	model string
	local map[string]string // layer -> op named in the reason
}{
	{"round_side_output_opset13", map[string]string{"side.weight": "Round (node /Round"}},
	{"argmax_router_opset13", map[string]string{"router.weight": "ArgMax (node /router/ArgMax"}},
	{"argmax_only_opset13", map[string]string{"fc0.weight": "ArgMax (node /ArgMax", "fc1.weight": "ArgMax (node /ArgMax"}},
	// Every layer has a derivative path (an ArgMax-free model).
	{"gemm_relu_opset13", map[string]string{}},
	{"split_qkv_opset13", map[string]string{}},
}

// TestLocalObjectives: the layers whose every path to the outputs
// crosses an op without a derivative are found, with the op named; a
// layer with one differentiable path (fc0 beside the Round or the
// router) stays output-level.
func TestLocalObjectives(t *testing.T) {
	for _, c := range localCases {
		t.Run(c.model, func(t *testing.T) {
			net, _ := caseNet(t, c.model)
			local := LocalObjectives(net)
			for _, l := range net.Layers {
				why, isLocal := local[l]
				op, want := c.local[l.Name]
				if isLocal != want {
					t.Errorf("layer %s: local %v (%q), want %v", l.Name, isLocal, why, want)
					continue
				}
				if want && !strings.Contains(why, op) {
					t.Errorf("layer %s: reason %q does not name %q", l.Name, why, op)
				}
				tr := Treatment(l, local)
				if want != strings.HasPrefix(tr, "local objective: ") || !want && tr != "output-level" {
					t.Errorf("layer %s: treatment %q", l.Name, tr)
				}
			}
		})
	}
}

// TestLocalImportanceBruteForce: on a local layer, EC's importance of a
// weight is the compensated change of the layer's own output when the
// weight is removed and its delta added to the bias, (1/N) sum over rows
// of ||z' - z||^2; on an output-level layer feeding an output directly
// it is the change of that output. Forward and reverse mode agree, and
// the statistics pass no longer fails or gives g = 0 behind the op.
func TestLocalImportanceBruteForce(t *testing.T) {
	const n = 40
	for _, c := range localCases[:3] {
		for _, ad := range []string{ADForward, ADReverse} {
			t.Run(c.model+"/"+ad, func(t *testing.T) {
				net, tc := caseNet(t, c.model)
				x := tc.Inputs(n, 7)
				shape := make([]int, len(tc.InputShape))
				for k, d := range tc.InputShape {
					shape[k] = int(d)
				}
				var logs []string
				st, err := Collect(net, sliceData{x: x, shape: shape}, StatsOptions{AD: ad, Batch: 16,
					Log: func(f string, a ...any) { logs = append(logs, f) }})
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Local) != len(c.local) {
					t.Fatalf("Stats.Local %v, want layers %v", st.Local, c.local)
				}
				logged := 0
				for _, f := range logs {
					if strings.Contains(f, "local objective") {
						logged++
					}
				}
				if logged != len(c.local) {
					t.Errorf("%d local-objective log lines, want %d", logged, len(c.local))
				}
				in := NewTensor(append([]int{n}, shape...), x)
				base := mustRun(t, net, in)
				for _, ls := range st.Layers {
					l := ls.Layer
					_, local := st.Local[l]
					direct := false
					for _, o := range net.Outputs {
						direct = direct || o == net.Ops[ls.Op].Out
					}
					if !local && !direct {
						continue
					}
					imp, delta := ls.ECImportance(st.N)
					nonzero := 0
					for q := 0; q < l.Params(); q += 3 {
						got := removalChange(t, net, in, base, l, q, delta[q], ls.Op)
						if math.Abs(got-imp[q]) > 1e-9*math.Max(1, math.Abs(got)) {
							t.Errorf("layer %s weight %d: importance %.12g, brute force %.12g", l.Name, q, imp[q], got)
						}
						if got > 0 {
							nonzero++
						}
					}
					if nonzero == 0 {
						t.Errorf("layer %s: every sampled removal changes nothing", l.Name)
					}
				}
			})
		}
	}
}

// removalChange removes weight q of layer l, adds delta to its row's
// bias, and returns (1/N) sum over rows of ||z' - z||^2 at the layer's
// own output (op index op).
func removalChange(t *testing.T, net *onnxio.Network, in *Tensor, base *Trace, l *onnxio.Layer, q int, delta float64, op int) float64 {
	t.Helper()
	c := net.Clone()
	cl := c.Layers[l.Index]
	w := cl.Weights64()
	w = append([]float64(nil), w...)
	w[q] = 0
	cl.SetWeights(w)
	if cl.B == nil {
		cl.B = make([]float64, cl.Out)
	}
	cl.B[q/cl.In] += delta
	tr := mustRun(t, c, in)
	z0, z1 := base.Values[net.Ops[op].Out], tr.Values[c.Ops[op].Out]
	var s float64
	for k := range z0.Data {
		d := z1.Data[k] - z0.Data[k]
		s += d * d
	}
	return s / float64(in.Shape[0])
}
