package analysis

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

var rnnVectorGroups = []familyVectors{
	{prefix: "test_lstm_", bind: [][]int{{4}, {1, 2, 3, 4, 5, 6, 7}}}, // sequence_lens (int32) always bound
	{prefix: "test_gru_", bind: [][]int{{}, {1, 2, 3, 4, 5}}},
	{prefix: "test_rnn_", bind: [][]int{{}, {1, 2, 3, 4, 5}}},
	{prefix: "test_simple_rnn_", bind: [][]int{{}, {1, 2, 3, 4, 5}}},
}

func TestOperatorVectorsRNN(t *testing.T) { runVectorGroups(t, rnnVectorGroups) }

func TestRNNKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	r := func(shape ...int) *Tensor { return randTensor(rng, -0.8, 0.8, shape...) }
	type cfg struct {
		typ, dir     string
		layout, lbr  int
		init, peep   bool
		bias         bool
		clip         float64
		acts         []string
		seq, batch   int
		input, hid   int
		outs         []int
		withStateDir bool
	}
	var cases []kernelCase
	add := func(name string, c cfg) {
		gates, _ := rnnGateCount(c.typ)
		dirs := 1
		if c.dir == "bidirectional" {
			dirs = 2
		}
		attrs := map[string]onnxio.AttrValue{
			"hidden_size": {Kind: onnxio.AttrIsInt, Int: int64(c.hid)},
			"direction":   {Kind: onnxio.AttrIsString, Str: c.dir},
			"layout":      {Kind: onnxio.AttrIsInt, Int: int64(c.layout)},
		}
		if c.typ == "GRU" {
			attrs["linear_before_reset"] = onnxio.AttrValue{Kind: onnxio.AttrIsInt, Int: int64(c.lbr)}
		}
		if c.clip > 0 {
			attrs["clip"] = onnxio.AttrValue{Kind: onnxio.AttrIsFloat, Float: c.clip}
		}
		if c.acts != nil {
			attrs["activations"] = onnxio.AttrValue{Kind: onnxio.AttrIsStrings, Strs: c.acts}
		}
		x := r(c.seq, c.batch, c.input)
		state := []int{dirs, c.batch, c.hid}
		if c.layout == 1 {
			x = r(c.batch, c.seq, c.input)
			state = []int{c.batch, dirs, c.hid}
		}
		ins := []*Tensor{x, r(dirs, gates*c.hid, c.input), r(dirs, gates*c.hid, c.hid)}
		diff := []int{0}
		if c.bias || c.init || c.peep {
			ins = append(ins, nil, nil)
			if c.bias {
				ins[3] = r(dirs, 2*gates*c.hid)
			}
		}
		if c.init || c.peep {
			ins = append(ins, r(state...))
			diff = append(diff, 5)
			if c.typ == "LSTM" {
				ins = append(ins, r(state...))
				diff = append(diff, 6)
			}
		}
		if c.peep {
			ins = append(ins, r(dirs, 3*c.hid))
		}
		for _, k := range c.outs {
			cases = append(cases, kernelCase{Name: fmt.Sprintf("%s out %d", name, k),
				Op: onnxio.Op{Type: c.typ, Attrs: attrs, OutIndex: k}, Ins: ins, Diff: diff})
		}
	}
	all := []int{0, 1, 2}
	add("LSTM forward", cfg{typ: "LSTM", dir: "forward", bias: true, seq: 4, batch: 3, input: 5, hid: 4, outs: all})
	add("LSTM reverse initial states", cfg{typ: "LSTM", dir: "reverse", bias: true, init: true, seq: 3, batch: 2, input: 3, hid: 4, outs: all})
	add("LSTM bidirectional batch first", cfg{typ: "LSTM", dir: "bidirectional", layout: 1, bias: true, init: true, seq: 3, batch: 2, input: 4, hid: 3, outs: all})
	add("LSTM peepholes", cfg{typ: "LSTM", dir: "forward", bias: true, peep: true, seq: 3, batch: 2, input: 3, hid: 3, outs: all})
	add("LSTM clip", cfg{typ: "LSTM", dir: "forward", clip: 0.7, seq: 3, batch: 2, input: 3, hid: 3, outs: []int{0}})
	add("GRU linear_before_reset", cfg{typ: "GRU", dir: "forward", lbr: 1, bias: true, init: true, seq: 4, batch: 2, input: 3, hid: 4, outs: []int{0, 1}})
	add("GRU", cfg{typ: "GRU", dir: "forward", bias: true, init: true, seq: 4, batch: 2, input: 3, hid: 4, outs: []int{0, 1}})
	add("GRU bidirectional batch first lbr", cfg{typ: "GRU", dir: "bidirectional", layout: 1, lbr: 1, bias: true, seq: 3, batch: 2, input: 3, hid: 3, outs: []int{0, 1}})
	add("GRU reverse", cfg{typ: "GRU", dir: "reverse", init: true, seq: 3, batch: 2, input: 3, hid: 3, outs: []int{0, 1}})
	add("RNN tanh", cfg{typ: "RNN", dir: "forward", bias: true, init: true, seq: 4, batch: 2, input: 3, hid: 4, outs: []int{0, 1}})
	add("RNN bidirectional relu", cfg{typ: "RNN", dir: "bidirectional", bias: true, acts: []string{"Relu", "Relu"}, seq: 3, batch: 2, input: 3, hid: 4, outs: []int{0, 1}})
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { checkKernel(t, c) })
	}
}
