package onnxio

import (
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// Graph indexes a GraphProto: who produces and who consumes each value, and
// which names are constants. It is a read-only view; editing the graph
// invalidates it.
type Graph struct {
	G *pb.GraphProto

	Producer    map[string]int   // value name -> index of the node that outputs it
	Consumers   map[string][]int // value name -> indices of the nodes that read it (in graph order)
	Initializer map[string]*pb.TensorProto
	Sparse      map[string]*pb.SparseTensorProto // by values' name
	IsOutput    map[string]bool
	// RealInputs are the graph inputs fed at run time: opset-9-style
	// exports also list every initializer as an input, with the
	// initializer as its default; those are left out here.
	RealInputs []*pb.ValueInfoProto
}

// NewGraph indexes g.
func NewGraph(g *pb.GraphProto) *Graph {
	x := &Graph{
		G:           g,
		Producer:    map[string]int{},
		Consumers:   map[string][]int{},
		Initializer: map[string]*pb.TensorProto{},
		Sparse:      map[string]*pb.SparseTensorProto{},
		IsOutput:    map[string]bool{},
	}
	for _, t := range g.Initializer {
		x.Initializer[t.GetName()] = t
	}
	for _, s := range g.SparseInitializer {
		x.Sparse[s.GetValues().GetName()] = s
	}
	for i, n := range g.Node {
		for _, o := range n.Output {
			if o != "" {
				x.Producer[o] = i
			}
		}
		seen := map[string]bool{}
		for _, in := range n.Input {
			if in != "" && !seen[in] {
				seen[in] = true
				x.Consumers[in] = append(x.Consumers[in], i)
			}
		}
		// Names read inside subgraphs (If/Loop bodies) count as uses too,
		// so a weight used there is never edited for one consumer only.
		for _, a := range n.Attribute {
			for _, sg := range append([]*pb.GraphProto{a.G}, a.Graphs...) {
				if sg == nil {
					continue
				}
				for name := range subgraphReads(sg) {
					if !seen[name] {
						seen[name] = true
						x.Consumers[name] = append(x.Consumers[name], i)
					}
				}
			}
		}
	}
	for _, o := range g.Output {
		x.IsOutput[o.GetName()] = true
	}
	for _, in := range g.Input {
		if _, isInit := x.Initializer[in.GetName()]; isInit {
			continue
		}
		if _, isSparse := x.Sparse[in.GetName()]; isSparse {
			continue
		}
		x.RealInputs = append(x.RealInputs, in)
	}
	return x
}

// subgraphReads lists the names a subgraph and its nested subgraphs read.
func subgraphReads(g *pb.GraphProto) map[string]bool {
	out := map[string]bool{}
	for _, n := range g.Node {
		for _, in := range n.Input {
			out[in] = true
		}
		for _, a := range n.Attribute {
			for _, sg := range append([]*pb.GraphProto{a.G}, a.Graphs...) {
				if sg != nil {
					for k := range subgraphReads(sg) {
						out[k] = true
					}
				}
			}
		}
	}
	return out
}

// Attr finds a node attribute by name.
func Attr(n *pb.NodeProto, name string) *pb.AttributeProto {
	for _, a := range n.Attribute {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

// AttrInt returns an int attribute or def when absent.
func AttrInt(n *pb.NodeProto, name string, def int64) int64 {
	if a := Attr(n, name); a != nil {
		return a.GetI()
	}
	return def
}

// AttrFloat returns a float attribute or def when absent.
func AttrFloat(n *pb.NodeProto, name string, def float64) float64 {
	if a := Attr(n, name); a != nil {
		return float64(a.GetF())
	}
	return def
}

// AttrString returns a string attribute or def when absent.
func AttrString(n *pb.NodeProto, name string, def string) string {
	if a := Attr(n, name); a != nil {
		return string(a.GetS())
	}
	return def
}

// AttrInts returns an ints attribute, or nil when absent.
func AttrInts(n *pb.NodeProto, name string) []int64 {
	if a := Attr(n, name); a != nil {
		return a.GetInts()
	}
	return nil
}

// ValueShape is the declared shape of a value info: -1 for a dimension
// that is symbolic or unknown; nil if no shape is declared.
func ValueShape(v *pb.ValueInfoProto) []int64 {
	tt := v.GetType().GetTensorType()
	if tt == nil || tt.Shape == nil {
		return nil
	}
	out := make([]int64, len(tt.Shape.Dim))
	for i, d := range tt.Shape.Dim {
		if dv, ok := d.Value.(*pb.TensorShapeProto_Dimension_DimValue); ok && dv.DimValue > 0 {
			out[i] = dv.DimValue
		} else {
			out[i] = -1
		}
	}
	return out
}

// ValueElemType is the declared element type of a value info (0 if none).
func ValueElemType(v *pb.ValueInfoProto) int32 {
	return v.GetType().GetTensorType().GetElemType()
}

// f32 rounds through float32, the precision ONNX float attributes have.
func f32(v float64) float64 { return float64(float32(v)) }
