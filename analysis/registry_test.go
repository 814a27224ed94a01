package analysis

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// kernelCase is one op with concrete inputs for checkKernel: ins by ONNX
// position (nil for absent), Diff the positions that are float data (the
// others are shapes, indices, axes).
type kernelCase struct {
	Name string
	Op   onnxio.Op // Type and Attrs; Slots, InTypes and OutType are filled in
	Ins  []*Tensor
	Diff []int
	// IntIns are the positions holding integer tensors (InTypes INT64).
	IntIns []int
}

// opOf completes a case's op as the extractor would build it.
func (c *kernelCase) opOf() *onnxio.Op {
	op := c.Op
	op.Kind = onnxio.OpNode
	op.Slots = make([]int, len(c.Ins))
	op.InTypes = make([]int32, len(c.Ins))
	op.In = nil
	for k, t := range c.Ins {
		op.Slots[k] = -1
		if t == nil {
			continue
		}
		op.Slots[k] = len(op.In)
		op.In = append(op.In, len(op.In))
		op.InTypes[k] = onnxio.Float
		for _, i := range c.IntIns {
			if i == k {
				op.InTypes[k] = onnxio.Int64
			}
		}
	}
	if op.OutType == 0 {
		op.OutType = onnxio.Float
	}
	return &op
}

// checkKernel verifies an OpNode kernel's derivatives against its own
// forward pass: the JVP against central finite differences of Forward
// along a random direction of every Diff input (relative 1e-6), and the
// VJP against the JVP by the dot-product identity <g, J t> = <J^T g, t>
// (relative 1e-10). Inputs should keep away from kinks (Relu at 0, max
// ties) by the FD step.
func checkKernel(t *testing.T, c kernelCase) {
	t.Helper()
	op := c.opOf()
	k := kernels[op.Type]
	if k == nil {
		t.Fatalf("%s: no kernel for %s", c.Name, op.Type)
	}
	if k.Check != nil {
		if err := k.Check(op); err != nil {
			t.Fatalf("%s: Check: %v", c.Name, err)
		}
	}
	y, err := k.Forward(op, c.Ins)
	if err != nil {
		t.Fatalf("%s: Forward: %v", c.Name, err)
	}
	if k.JVP == nil {
		return
	}
	rng := rand.New(rand.NewPCG(1, 2))
	dirs := make([]*Tensor, len(c.Ins))
	for _, p := range c.Diff {
		d := NewTensor(c.Ins[p].Shape, nil)
		for i := range d.Data {
			d.Data[i] = rng.Float64()*2 - 1
		}
		dirs[p] = d
	}
	var st any
	if k.Prepare != nil {
		if st, err = k.Prepare(op, c.Ins, y); err != nil {
			t.Fatalf("%s: Prepare: %v", c.Name, err)
		}
	}
	jt, err := k.JVP(op, c.Ins, y, st, dirs)
	if err != nil {
		t.Fatalf("%s: JVP: %v", c.Name, err)
	}
	if jt == nil {
		jt = NewTensor(y.Shape, nil)
	}
	// Central differences of Forward along dirs.
	const h = 1e-6
	shifted := func(s float64) *Tensor {
		ins := make([]*Tensor, len(c.Ins))
		copy(ins, c.Ins)
		for _, p := range c.Diff {
			x := c.Ins[p].Clone()
			for i := range x.Data {
				x.Data[i] += s * dirs[p].Data[i]
			}
			ins[p] = x
		}
		out, err := k.Forward(op, ins)
		if err != nil {
			t.Fatalf("%s: Forward at a shifted point: %v", c.Name, err)
		}
		return out
	}
	yp, ym := shifted(h), shifted(-h)
	scale := 1e-3
	for _, v := range jt.Data {
		scale = math.Max(scale, math.Abs(v))
	}
	for i := range jt.Data {
		fd := (yp.Data[i] - ym.Data[i]) / (2 * h)
		if e := math.Abs(fd - jt.Data[i]); e > 1e-6*scale+1e-7 {
			t.Fatalf("%s: JVP element %d: %g, finite differences %g", c.Name, i, jt.Data[i], fd)
		}
	}
	// Dot-product test of the VJP.
	g := NewTensor(y.Shape, nil)
	for i := range g.Data {
		g.Data[i] = rng.Float64()*2 - 1
	}
	gin := make([]*Tensor, len(c.Ins))
	for _, p := range c.Diff {
		gin[p] = NewTensor(c.Ins[p].Shape, nil)
	}
	if err := k.VJP(op, c.Ins, y, st, g, gin); err != nil {
		t.Fatalf("%s: VJP: %v", c.Name, err)
	}
	lhs, rhs, mag := 0.0, 0.0, 0.0
	for i, v := range g.Data {
		lhs += v * jt.Data[i]
		mag += math.Abs(v * jt.Data[i])
	}
	for _, p := range c.Diff {
		for i, v := range gin[p].Data {
			rhs += v * dirs[p].Data[i]
			mag += math.Abs(v * dirs[p].Data[i])
		}
	}
	if math.Abs(lhs-rhs) > 1e-10*math.Max(mag, 1e-300) {
		t.Fatalf("%s: <g, J t> = %g but <J^T g, t> = %g", c.Name, lhs, rhs)
	}
}

// randTensor is a tensor of uniform values in [lo, hi).
func randTensor(rng *rand.Rand, lo, hi float64, shape ...int) *Tensor {
	t := NewTensor(shape, nil)
	for i := range t.Data {
		t.Data[i] = lo + (hi-lo)*rng.Float64()
	}
	return t
}

// intTensor is an integer tensor (shapes, axes, indices).
func intTensor(shape []int, v ...int) *Tensor {
	t := NewTensor(shape, nil)
	for i, x := range v {
		t.Data[i] = float64(x)
	}
	return t
}

func TestRegistryRejectsIncompleteKernels(t *testing.T) {
	for _, c := range []struct {
		name string
		k    *Kernel
	}{
		{"no forward", &Kernel{}},
		{"JVP without VJP", &Kernel{Forward: func(*onnxio.Op, []*Tensor) (*Tensor, error) { return nil, nil },
			JVP: func(*onnxio.Op, []*Tensor, *Tensor, any, []*Tensor) (*Tensor, error) { return nil, nil }}},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("register accepted it")
				}
			}()
			register("TestOnly"+c.name, c.k)
		})
	}
}

func TestCheckNamesEveryUnsupportedOp(t *testing.T) {
	net := &onnxio.Network{Evaluable: true, Ops: []onnxio.Op{
		{Kind: onnxio.OpNode, Type: "NoSuchOpA", Node: "a"},
		{Kind: onnxio.OpRelu, Node: "r"},
		{Kind: onnxio.OpNode, Type: "NoSuchOpB", Node: "b"},
		{Kind: onnxio.OpNode, Type: "NoSuchOpA", Node: "a2"},
	}}
	err := Check(net)
	ue, ok := err.(*UnsupportedError)
	if !ok {
		t.Fatalf("Check: %v, want an *UnsupportedError", err)
	}
	if len(ue.Ops) != 2 {
		t.Errorf("named %q, want NoSuchOpA and NoSuchOpB once each", ue.Ops)
	}
}
