package export

import (
	"encoding/json"
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"
	"slices"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// Format is how a pruned weight is stored.
type Format string

// The storage formats. See the package documentation for when each is valid.
const (
	Auto              Format = "auto"
	Constant          Format = "constant"
	SparseInitializer Format = "sparse-initializer"
	Dense             Format = "dense"
)

// ParseFormat checks a format name ("" means auto).
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case "":
		return Auto, nil
	case Auto, Constant, SparseInitializer, Dense:
		return f, nil
	}
	return "", fmt.Errorf("unknown weight format %q (want auto, constant, sparse-initializer or dense)", s)
}

// MetadataKey is the metadata_props key Apply records Options.Metadata under.
const MetadataKey = "ecprune"

// Version limits that decide what may be written.
const (
	minSparseIR       = 6  // SparseTensorProto exists from IR 6
	minConstantOpset  = 11 // Constant's sparse_value from opset 11
	minNoLegacyBcast  = 7  // Add before opset 7 needs broadcast=1 to broadcast
	minInitsNotInputs = 4  // below IR 4 every initializer must be a graph input
)

// Update is the new content of one dense layer.
type Update struct {
	Layer *onnxio.Layer // from onnxio.Extract on the same model
	W     []float64     // effective weights, Out x In row-major; zeros are pruned
	B     []float64     // effective bias (len Out), or nil to keep the bias
}

// Options tunes Apply.
type Options struct {
	Format Format // "" is Auto
	// AddBias lets a layer without a bias get one when its Update.B is
	// non-nil; without it such an update is an error.
	AddBias bool
	// Metadata, if non-empty, is JSON stored under metadata_props key
	// "ecprune", replacing an existing entry.
	Metadata string
}

// TensorResult says how one weight was written.
type TensorResult struct {
	Layer      string // the layer's name (Layer.Name)
	Tensor     string // the weight tensor's name
	Format     Format // the form chosen (never Auto)
	Bytes      int64  // encoded size of the chosen form (proto.Size)
	DenseBytes int64  // encoded size of the dense form
	NNZ, Size  int    // non-zeros as stored, and all elements
	// TiedWith names the layer whose result holds the write of a tied
	// weight (one tensor for several layers): Bytes and DenseBytes are 0
	// here, so that sums count the tensor once.
	TiedWith string
}

// Apply writes updates into a copy of m and returns it with one result per
// update. m is not modified; the copy keeps m's Path and Dir, so external
// data of tensors left untouched still resolves from the source folder
// (save it with Save). The copy shares m's cache of external data files
// and the raw bytes of its untouched tensors (neither may write into
// them): do not use the two from different goroutines at once. Updates must refer
// to distinct prunable layers of a network extracted from m; a layer that
// does not match m's graph is an error, as is any update that cannot be
// written exactly (see the package documentation).
func Apply(m *onnxio.Model, updates []Update, opt Options) (*onnxio.Model, []TensorResult, error) {
	format, err := ParseFormat(string(opt.Format))
	if err != nil {
		return nil, nil, err
	}
	if opt.Metadata != "" && !json.Valid([]byte(opt.Metadata)) {
		return nil, nil, fmt.Errorf("export: metadata is not valid JSON")
	}
	// A shallow copy keeps Path, Dir and the (unexported) cache of external
	// data files, so untouched external tensors still resolve. The proto
	// is cloned but for the tensors' raw bytes, which untouched tensors
	// share with m (changed ones get new tensors): the weights of a large
	// model are not copied.
	out := *m
	out.Proto = onnxio.CloneSharingData(m.Proto)
	out.Warnings = append([]string(nil), m.Warnings...)
	e := newEditor(&out, format, opt.AddBias)
	if format == Constant || format == SparseInitializer {
		if err := e.sparseAllowed(format); err != nil {
			return nil, nil, fmt.Errorf("export: %s format: %w", format, err)
		}
	}
	done := map[int]string{} // main node index -> layer, to refuse duplicates
	tied := map[string]*tieWrite{}
	results := make([]TensorResult, 0, len(updates))
	for i, u := range updates {
		if u.Layer == nil {
			return nil, nil, fmt.Errorf("export: update %d has no layer", i)
		}
		if prev, dup := done[u.Layer.MainIdx]; dup {
			return nil, nil, fmt.Errorf("export: layer %s is updated twice (also as %s)", u.Layer.Name, prev)
		}
		done[u.Layer.MainIdx] = u.Layer.Name
		r, err := e.apply(u, tied)
		if err != nil {
			return nil, nil, fmt.Errorf("export: layer %s: %w", u.Layer.Name, err)
		}
		results = append(results, r)
	}
	if err := e.flushBlocks(results); err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	e.finish()
	if opt.Metadata != "" {
		setMetadata(out.Proto, MetadataKey, opt.Metadata)
	}
	return &out, results, nil
}

// editor accumulates the edits of one Apply on the cloned graph. Node
// indices are those of the source graph (the clone has the same order);
// inserted nodes are kept aside and spliced in by finish, so the indices in
// the layers stay valid throughout.
type editor struct {
	g            *pb.GraphProto
	idx          *onnxio.Graph
	format       Format
	allowAddBias bool
	opset        int64
	ir           int64
	names        map[string]bool // every name in use, for unique new names
	// initsAsInputs: the file lists its initializers as graph inputs
	// (opset-9-style exports, or required below IR 4), so new ones are
	// listed too.
	initsAsInputs bool

	before, after map[int][]*pb.NodeProto // nodes to insert around source node i
	removeInit    map[string]bool         // initializers moved to sparse forms
	redirected    map[string]bool         // biases a node stopped reading (may be orphaned)
	newInits      []*pb.TensorProto
	newSparse     []*pb.SparseTensorProto
	initPos       map[string]int // initializer positions by name, for replaceInit

	// Tensors several layers write blocks of (a packed attention
	// projection split by Slice nodes): the whole tensor's new values,
	// encoded once after every layer has written its block.
	model       *onnxio.Model
	blocks      map[string]*blockWrite
	blockOrder  []string
	biasBlocks  map[string]*blockWrite
	biasesOrder []string
}

// blockWrite is a tensor being assembled from the blocks of its layers:
// the stored values (the original ones where no layer writes) and which
// elements a layer wrote, to refuse overlapping writes that differ.
type blockWrite struct {
	init    *pb.TensorProto
	vals    []float64
	written []bool
	layer   *onnxio.Layer // the first writer
	results []int         // indices of the writers' results
}

func newEditor(m *onnxio.Model, format Format, addBias bool) *editor {
	g := m.Proto.Graph
	e := &editor{
		g: g, idx: onnxio.NewGraph(g), format: format, allowAddBias: addBias,
		opset: m.Opset(""), ir: m.Proto.GetIrVersion(),
		names:  map[string]bool{},
		before: map[int][]*pb.NodeProto{}, after: map[int][]*pb.NodeProto{},
		removeInit: map[string]bool{}, redirected: map[string]bool{},
		model: m, blocks: map[string]*blockWrite{}, biasBlocks: map[string]*blockWrite{},
	}
	collectNames(g, e.names)
	inputs := map[string]bool{}
	for _, in := range g.Input {
		inputs[in.GetName()] = true
	}
	all := len(g.Initializer) > 0
	for _, t := range g.Initializer {
		all = all && inputs[t.GetName()]
	}
	e.initsAsInputs = all || e.ir < minInitsNotInputs
	return e
}

// collectNames gathers every value and node name of g and its subgraphs.
func collectNames(g *pb.GraphProto, names map[string]bool) {
	for _, t := range g.Initializer {
		names[t.GetName()] = true
	}
	for _, s := range g.SparseInitializer {
		names[s.GetValues().GetName()] = true
	}
	for _, vs := range [][]*pb.ValueInfoProto{g.Input, g.Output, g.ValueInfo} {
		for _, v := range vs {
			names[v.GetName()] = true
		}
	}
	for _, n := range g.Node {
		names[n.GetName()] = true
		for _, s := range n.Input {
			names[s] = true
		}
		for _, s := range n.Output {
			names[s] = true
		}
		for _, a := range n.Attribute {
			if a.G != nil {
				collectNames(a.G, names)
			}
			for _, sg := range a.Graphs {
				collectNames(sg, names)
			}
		}
	}
}

// unique returns base, or base_1, base_2, ... if taken, and reserves it.
func (e *editor) unique(base string) string {
	name := base
	for k := 1; e.names[name]; k++ {
		name = base + "_" + strconv.Itoa(k)
	}
	e.names[name] = true
	return name
}

// sparseAllowed says why the model cannot hold sparse tensors in this
// format, or nil.
func (e *editor) sparseAllowed(f Format) error {
	if e.ir < minSparseIR {
		return fmt.Errorf("sparse tensors need IR version >= %d, the model has %d (use dense or auto)", minSparseIR, e.ir)
	}
	if f == Constant && e.opset < minConstantOpset {
		return fmt.Errorf("a Constant with sparse_value needs opset >= %d, the model has %d (use dense or auto)", minConstantOpset, e.opset)
	}
	return nil
}

func (e *editor) nodeLabel(i int) string {
	n := e.g.Node[i]
	if n.GetName() != "" {
		return n.GetName()
	}
	return fmt.Sprintf("%s_%d", n.GetOpType(), i)
}

// exclusive reports whether value v is read by exactly one node and is not
// a graph output, so it can be rewritten for that node alone.
func (e *editor) exclusive(v string) bool {
	return len(e.idx.Consumers[v]) == 1 && !e.idx.IsOutput[v]
}

// weightSource follows the main node's weight input back through the
// Transpose (if the layer has one) and Identity nodes to the initializer,
// checking that every link is used by this layer alone. It returns the
// initializer.
func (e *editor) weightSource(l *onnxio.Layer) (*pb.TensorProto, error) {
	n := e.g.Node[l.MainIdx]
	v := n.Input[1]
	if l.TransposeIdx >= 0 {
		if l.TransposeIdx >= len(e.g.Node) {
			return nil, fmt.Errorf("transpose node index %d out of range: the layer is not from this model", l.TransposeIdx)
		}
		tn := e.g.Node[l.TransposeIdx]
		if tn.GetOpType() != "Transpose" || len(tn.Input) == 0 || len(tn.Output) == 0 || !e.reaches(tn.Output[0], v) {
			return nil, fmt.Errorf("node %s is not the Transpose feeding %s: the layer is not from this model", e.nodeLabel(l.TransposeIdx), l.Node)
		}
		if !e.exclusive(tn.Output[0]) {
			return nil, fmt.Errorf("transposed weight %q is shared by several nodes", tn.Output[0])
		}
		v = tn.Input[0]
	}
	for v != l.WeightInit {
		if !e.exclusive(v) {
			return nil, fmt.Errorf("weight value %q is shared by several nodes", v)
		}
		p, ok := e.idx.Producer[v]
		if !ok || e.g.Node[p].GetOpType() != "Identity" || len(e.g.Node[p].Input) == 0 {
			return nil, fmt.Errorf("weight of %s does not come from initializer %q: the layer is not from this model", l.Node, l.WeightInit)
		}
		v = e.g.Node[p].Input[0]
	}
	if !e.exclusive(v) {
		return nil, fmt.Errorf("weight %q is shared by several nodes", v)
	}
	t := e.idx.Initializer[v]
	if t == nil {
		return nil, fmt.Errorf("weight %q is not an initializer", v)
	}
	return t, nil
}

// reaches reports whether value to is from, possibly through Identity
// nodes that only this path uses.
func (e *editor) reaches(from, to string) bool {
	for to != from {
		p, ok := e.idx.Producer[to]
		if !ok || e.g.Node[p].GetOpType() != "Identity" || len(e.g.Node[p].Input) == 0 || !e.exclusive(to) {
			return false
		}
		to = e.g.Node[p].Input[0]
	}
	return true
}

// checkValues rejects slices of the wrong length or with non-finite values,
// which would come from a bug upstream, not from the model.
func checkValues(what string, v []float64, n int) error {
	if len(v) != n {
		return fmt.Errorf("%s has %d values, want %d", what, len(v), n)
	}
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%s[%d] is %v", what, i, x)
		}
	}
	return nil
}

// stored rounds v/scale to element type dt with -0 made +0: a tiny
// negative value rounds to -0, which runtimes count as a non-zero.
func stored(dt int32, v, scale float64) float64 {
	s := onnxio.RoundTo(dt, v/scale)
	if s == 0 {
		s = 0
	}
	return s
}

// tieWrite is the first write of a tied weight: the later uses must
// store the same values, and write only their biases.
type tieWrite struct {
	layer  string
	vals   []float64 // stored order and values
	result TensorResult
}

func (e *editor) apply(u Update, tied map[string]*tieWrite) (TensorResult, error) {
	l := u.Layer
	if !l.Prunable {
		return TensorResult{}, fmt.Errorf("not prunable: %s", l.Reason)
	}
	if l.MainIdx < 0 || l.MainIdx >= len(e.g.Node) || e.nodeLabel(l.MainIdx) != l.Node {
		return TensorResult{}, fmt.Errorf("node %s not found at index %d: the layer is not from this model", l.Node, l.MainIdx)
	}
	n := e.g.Node[l.MainIdx]
	if op := n.GetOpType(); (op != "Gemm" && op != "MatMul") || len(n.Input) < 2 || len(n.Output) == 0 {
		return TensorResult{}, fmt.Errorf("node %s is a %s, not a Gemm or MatMul: the layer is not from this model", l.Node, op)
	}
	if err := checkValues("W", u.W, l.Out*l.In); err != nil {
		return TensorResult{}, err
	}
	if u.B != nil {
		if err := checkValues("B", u.B, l.Out); err != nil {
			return TensorResult{}, err
		}
	}
	if l.Tie != nil && l.WeightRows > 0 {
		return e.applyBlock(u, n)
	}
	if l.Tie != nil {
		return e.applyTied(u, n, tied)
	}
	init, err := e.weightSource(l)
	if err != nil {
		return TensorResult{}, err
	}
	r, err := e.writeWeight(l, init, u.W)
	if err != nil {
		return TensorResult{}, err
	}
	if u.B != nil {
		if err := e.writeBias(l, n, u.B); err != nil {
			return TensorResult{}, err
		}
	}
	return r, nil
}

// applyTied writes one use of a tied weight: the first use writes the
// tensor, every later one checks that its weights store the same values
// (a pruned element is pruned for all readers); each writes its own bias.
func (e *editor) applyTied(u Update, n *pb.NodeProto, tied map[string]*tieWrite) (TensorResult, error) {
	l := u.Layer
	init, err := e.tiedSource(l)
	if err != nil {
		return TensorResult{}, err
	}
	vals, err := storedValues(l, init, u.W)
	if err != nil {
		return TensorResult{}, err
	}
	var r TensorResult
	if first := tied[l.WeightInit]; first != nil {
		for k, v := range vals {
			if math.Float64bits(v) != math.Float64bits(first.vals[k]) {
				return TensorResult{}, fmt.Errorf("tied weight %s: element %d is %g for this layer and %g for layer %s, which read the same tensor",
					l.WeightInit, k, v, first.vals[k], first.layer)
			}
		}
		r = first.result
		r.Layer, r.Bytes, r.DenseBytes, r.TiedWith = l.Name, 0, 0, first.layer
	} else {
		if r, err = e.encodeWeight(l, init, init.GetDims(), vals); err != nil {
			return TensorResult{}, err
		}
		tied[l.WeightInit] = &tieWrite{layer: l.Node, vals: vals, result: r}
	}
	if u.B != nil {
		if err := e.writeBias(l, n, u.B); err != nil {
			return TensorResult{}, err
		}
	}
	return r, nil
}

// tiedSource follows a tied layer's weight input back through Identity
// and Transpose nodes, which other readers may share, to its initializer,
// checking that the Transposes on the way match the layer's layout.
func (e *editor) tiedSource(l *onnxio.Layer) (*pb.TensorProto, error) {
	v := e.g.Node[l.MainIdx].Input[1]
	transposes := 0
	for steps := 0; v != l.WeightInit; steps++ {
		p, ok := e.idx.Producer[v]
		if !ok || steps > len(e.g.Node) || len(e.g.Node[p].Input) == 0 {
			return nil, fmt.Errorf("weight of %s does not come from initializer %q: the layer is not from this model", l.Node, l.WeightInit)
		}
		switch e.g.Node[p].GetOpType() {
		case "Transpose":
			transposes++
		case "Identity":
		case "Slice":
			if p != l.SliceIdx || l.WeightRows == 0 || e.g.Node[p].Input[0] == v {
				return nil, fmt.Errorf("weight of %s passes Slice node %s, which is not its block's: the layer is not from this model", l.Node, e.nodeLabel(p))
			}
		default:
			return nil, fmt.Errorf("weight of %s does not come from initializer %q: the layer is not from this model", l.Node, l.WeightInit)
		}
		v = e.g.Node[p].Input[0]
	}
	if (transposes%2 == 1) != (l.TransposeIdx >= 0) {
		return nil, fmt.Errorf("weight of %s passes %d Transpose nodes: the layer is not from this model", l.Node, transposes)
	}
	if e.idx.IsOutput[v] {
		return nil, fmt.Errorf("weight %q is a graph output", v)
	}
	t := e.idx.Initializer[v]
	if t == nil {
		return nil, fmt.Errorf("weight %q is not an initializer", v)
	}
	return t, nil
}

// storedValues is w in the initializer's layout and element type,
// checked against the layer's shape.
func storedValues(l *onnxio.Layer, init *pb.TensorProto, w []float64) ([]float64, error) {
	dt := init.GetDataType()
	dims := init.GetDims()
	want := []int64{int64(l.Out), int64(l.In)}
	if l.WeightLayout == onnxio.LayoutInOut {
		want = []int64{int64(l.In), int64(l.Out)}
	}
	if len(dims) != 2 || dims[0] != want[0] || dims[1] != want[1] || dt != l.WeightType {
		return nil, fmt.Errorf("initializer %s is %s %v, the layer expects %s %v: the layer is not from this model",
			init.GetName(), onnxio.TypeName(dt), dims, onnxio.TypeName(l.WeightType), want)
	}
	if l.Alpha == 0 {
		return nil, fmt.Errorf("Gemm alpha is 0, so no weight can be written")
	}
	vals := make([]float64, len(w))
	for q, v := range w {
		vals[l.StoredIndex(q)] = stored(dt, v, l.Alpha)
	}
	return vals, nil
}

// writeWeight stores W in the layer's initializer in the chosen format.
func (e *editor) writeWeight(l *onnxio.Layer, init *pb.TensorProto, w []float64) (TensorResult, error) {
	dt := init.GetDataType()
	dims := init.GetDims()
	want := []int64{int64(l.Out), int64(l.In)}
	if l.WeightLayout == onnxio.LayoutInOut {
		want = []int64{int64(l.In), int64(l.Out)}
	}
	if len(dims) != 2 || dims[0] != want[0] || dims[1] != want[1] || dt != l.WeightType {
		return TensorResult{}, fmt.Errorf("initializer %s is %s %s, the layer expects %s %s: the layer is not from this model",
			init.GetName(), onnxio.TypeName(dt), plain.Shape(dims), onnxio.TypeName(l.WeightType), plain.Shape(want))
	}
	if l.Alpha == 0 {
		return TensorResult{}, fmt.Errorf("Gemm alpha is 0, so no weight can be written")
	}
	// The stored values, in the stored layout: w itself when that changes
	// nothing (an [out, in] weight whose values the element type holds
	// exactly, as pruned float32 weights are), so that a large layer is
	// not copied once more in float64 (128 MB for 4096x4096).
	if l.WeightLayout == onnxio.LayoutOutIn && storedAsIs(dt, w, l.Alpha) {
		return e.encodeWeight(l, init, dims, w)
	}
	vals := make([]float64, len(w))
	for o := 0; o < l.Out; o++ {
		for j := 0; j < l.In; j++ {
			k := o*l.In + j // stored [out,in]
			if l.WeightLayout == onnxio.LayoutInOut {
				k = j*l.Out + o
			}
			vals[k] = stored(dt, w[o*l.In+j], l.Alpha)
		}
	}
	return e.encodeWeight(l, init, dims, vals)
}

// storedAsIs tells whether every value of w is stored unchanged.
func storedAsIs(dt int32, w []float64, alpha float64) bool {
	for _, v := range w {
		if s := stored(dt, v, alpha); math.Float64bits(s) != math.Float64bits(v) {
			return false
		}
	}
	return true
}

// encodeWeight writes vals (stored layout and values) in the chosen
// format.
func (e *editor) encodeWeight(l *onnxio.Layer, init *pb.TensorProto, dims []int64, vals []float64) (TensorResult, error) {
	dt := init.GetDataType()
	nnz := 0
	for _, v := range vals {
		if v != 0 {
			nnz++
		}
	}
	name := init.GetName()
	dense := onnxio.EncodeFloats(init, dims, vals)
	r := TensorResult{Layer: l.Name, Tensor: name, NNZ: nnz, Size: len(vals), DenseBytes: int64(proto.Size(dense))}

	var sp *pb.SparseTensorProto
	var cnode *pb.NodeProto
	if nnz > 0 && (e.format != Auto || sparseLowerBound(vals, nnz, dt) < r.DenseBytes) {
		// (Auto: the sparse form, whose encoding takes several times the
		// dense one's memory on a large layer, is built only when it may
		// be the smaller.)
		sp = sparseTensor(init, dims, vals, nnz)
		cnode = &pb.NodeProto{
			Name:   proto.String(e.unique(name + "_ecprune_sparse")),
			OpType: proto.String("Constant"),
			Output: []string{name},
			Attribute: []*pb.AttributeProto{{
				Name:         proto.String("sparse_value"),
				Type:         pb.AttributeProto_SPARSE_TENSOR.Enum(),
				SparseTensor: sp,
			}},
		}
	}
	f := e.format
	switch {
	case nnz == 0:
		f = Dense // a sparse tensor needs values; zeros compress anyway
	case f == Auto:
		f = Dense
		if cnode != nil && e.sparseAllowed(Constant) == nil && proto.Size(cnode) < proto.Size(dense) {
			f = Constant
		}
	}
	r.Format = f
	switch f {
	case Dense:
		r.Bytes = r.DenseBytes
		e.replaceInit(name, dense)
	case Constant:
		r.Bytes = int64(proto.Size(cnode))
		e.removeInit[name] = true
		// Before its first reader (a tied weight has several; the
		// others come later in graph order, or read through nodes that
		// do).
		first := slices.Min(e.idx.Consumers[name])
		e.before[first] = append(e.before[first], cnode)
	case SparseInitializer:
		r.Bytes = int64(proto.Size(sp))
		e.removeInit[name] = true
		e.newSparse = append(e.newSparse, sp)
	}
	return r, nil
}

// sparseLowerBound is a lower bound of the bytes of vals's sparse form:
// its values' raw bytes and its indices' varints, without the framing.
func sparseLowerBound(vals []float64, nnz int, dt int32) int64 {
	n := int64(nnz) * int64(onnxio.ElemSize(dt))
	for k, v := range vals {
		if v != 0 {
			n += int64(protowire.SizeVarint(uint64(k)))
		}
	}
	return n
}

// sparseTensor encodes the non-zeros of vals (stored order) as ONNX wants
// them: values named like the weight in raw_data of its element type,
// linearised ascending INT64 indices in packed int64_data (varints: smaller
// than raw_data, and older runtimes read only this field).
func sparseTensor(like *pb.TensorProto, dims []int64, vals []float64, nnz int) *pb.SparseTensorProto {
	nz := make([]float64, 0, nnz)
	idx := make([]int64, 0, nnz)
	for k, v := range vals {
		if v != 0 {
			nz = append(nz, v)
			idx = append(idx, int64(k))
		}
	}
	values := onnxio.NewFloatTensor(like.GetName(), like.GetDataType(), []int64{int64(nnz)}, nz)
	values.DocString = like.DocString
	return &pb.SparseTensorProto{
		Values: values,
		Indices: &pb.TensorProto{
			Dims:      []int64{int64(nnz)},
			DataType:  proto.Int32(onnxio.Int64),
			Int64Data: idx,
		},
		Dims: append([]int64(nil), dims...),
	}
}

// replaceInit swaps the initializer of that name for t, in place, so the
// order of initializers is kept.
func (e *editor) replaceInit(name string, t *pb.TensorProto) {
	// Positions are indexed once: a scan per layer made writing a model of
	// many layers quadratic.
	if e.initPos == nil {
		e.initPos = make(map[string]int, len(e.g.Initializer))
		for i, x := range e.g.Initializer {
			if _, dup := e.initPos[x.GetName()]; !dup {
				e.initPos[x.GetName()] = i
			}
		}
	}
	if i, ok := e.initPos[name]; ok && i < len(e.g.Initializer) && e.g.Initializer[i].GetName() == name {
		e.g.Initializer[i] = t
		return
	}
	for i, x := range e.g.Initializer {
		if x.GetName() == name {
			e.g.Initializer[i] = t
			e.initPos[name] = i
			return
		}
	}
	panic("export: initializer " + name + " vanished") // indexed from this graph
}

// writeBias stores the effective bias b for the layer, adding a bias where
// there is none and a private copy where the bias is shared.
func (e *editor) writeBias(l *onnxio.Layer, n *pb.NodeProto, b []float64) error {
	var slot *string // the node input that reads the bias
	switch {
	case n.GetOpType() == "Gemm" && len(n.Input) >= 3 && n.Input[2] != "":
		slot = &n.Input[2]
	case n.GetOpType() == "MatMul" && l.AddIdx >= 0:
		if l.AddIdx >= len(e.g.Node) || e.g.Node[l.AddIdx].GetOpType() != "Add" || l.BiasSide < 0 || l.BiasSide > 1 ||
			len(e.g.Node[l.AddIdx].Input) != 2 {
			return fmt.Errorf("bias Add node index %d does not match: the layer is not from this model", l.AddIdx)
		}
		slot = &e.g.Node[l.AddIdx].Input[l.BiasSide]
	}
	if slot == nil {
		return e.insertBias(l, n, b)
	}
	if l.B != nil && l.BiasRows > 0 && !l.BiasShared {
		return e.writeBiasBlock(l, *slot, b)
	}
	if l.B == nil {
		return fmt.Errorf("bias %s (%s, shape %s) cannot be rewritten", *slot, onnxio.TypeName(l.BiasType), plain.Shape(l.BiasShape))
	}
	if l.Beta == 0 {
		return fmt.Errorf("Gemm beta is 0, so the bias cannot be changed")
	}
	shape := l.BiasShape
	if onnxio.NumElements(shape) != int64(l.Out) {
		shape = []int64{int64(l.Out)} // a scalar C: one value per neuron now
	}
	vals := make([]float64, l.Out)
	for i, v := range b {
		vals[i] = stored(l.BiasType, v, l.Beta)
	}
	old := e.idx.Initializer[*slot]
	if old != nil && *slot == l.BiasInit && !l.BiasShared && e.exclusive(*slot) {
		e.replaceInit(*slot, onnxio.EncodeFloats(old, shape, vals))
		if !slices.Equal(shape, old.GetDims()) {
			e.setDeclaredShape(*slot, shape)
		}
		return nil
	}
	// Shared (or not an initializer at all): a new one for this node only.
	base := l.BiasInit
	if base == "" {
		base = l.WeightInit + "_bias"
	} else {
		base += "_ecprune"
	}
	name := e.unique(base)
	var t *pb.TensorProto
	if old != nil {
		t = onnxio.EncodeFloats(old, shape, vals)
		t.Name = proto.String(name)
	} else {
		t = onnxio.NewFloatTensor(name, l.BiasType, shape, vals)
	}
	e.addInit(t)
	e.redirected[*slot] = true
	*slot = name
	return nil
}

// insertBias gives a bias-free layer a bias: Gemm a C input, MatMul an Add
// node right after it that takes over the MatMul's output name, so that
// consumers, graph outputs and value_info need no change.
func (e *editor) insertBias(l *onnxio.Layer, n *pb.NodeProto, b []float64) error {
	if !e.allowAddBias {
		return fmt.Errorf("the layer has no bias and adding one was not allowed")
	}
	dt := l.WeightType // Gemm and MatMul outputs have their inputs' type
	beta := 1.0
	if n.GetOpType() == "Gemm" {
		if a := onnxio.Attr(n, "beta"); a != nil {
			if a.GetF() == 0 {
				// beta only scales C, which was absent: 1 changes nothing else.
				a.F = proto.Float32(1)
			}
			beta = float64(a.GetF())
		}
	}
	vals := make([]float64, l.Out)
	for i, v := range b {
		vals[i] = stored(dt, v, beta)
	}
	name := e.unique(l.WeightInit + "_bias")
	e.addInit(onnxio.NewFloatTensor(name, dt, []int64{int64(l.Out)}, vals))
	if n.GetOpType() == "Gemm" {
		for len(n.Input) < 3 {
			n.Input = append(n.Input, "")
		}
		n.Input[2] = name
		return nil
	}
	orig := n.Output[0]
	mid := e.unique(orig + "_ecprune_nobias")
	n.Output[0] = mid
	add := &pb.NodeProto{
		Name:   proto.String(e.unique(l.Node + "_ecprune_bias")),
		OpType: proto.String("Add"),
		Input:  []string{mid, name},
		Output: []string{orig},
	}
	if e.opset < minNoLegacyBcast {
		add.Attribute = []*pb.AttributeProto{{
			Name: proto.String("broadcast"), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(1),
		}}
	}
	e.after[l.MainIdx] = append(e.after[l.MainIdx], add)
	return nil
}

// addInit appends a new initializer, listed as a graph input too when the
// file lists its initializers that way.
func (e *editor) addInit(t *pb.TensorProto) {
	e.newInits = append(e.newInits, t)
	if e.initsAsInputs {
		e.g.Input = append(e.g.Input, &pb.ValueInfoProto{
			Name: t.Name,
			Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
				ElemType: t.DataType,
				Shape:    shapeProto(t.GetDims()),
			}}},
		})
	}
}

// setDeclaredShape updates graph input and value_info entries of a tensor
// whose shape changed, so the file stays consistent with itself.
func (e *editor) setDeclaredShape(name string, dims []int64) {
	for _, vs := range [][]*pb.ValueInfoProto{e.g.Input, e.g.ValueInfo} {
		for _, v := range vs {
			if tt := v.GetType().GetTensorType(); v.GetName() == name && tt != nil && tt.Shape != nil {
				tt.Shape = shapeProto(dims)
			}
		}
	}
}

func shapeProto(dims []int64) *pb.TensorShapeProto {
	s := &pb.TensorShapeProto{Dim: make([]*pb.TensorShapeProto_Dimension, len(dims))}
	for i, d := range dims {
		s.Dim[i] = &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: d}}
	}
	return s
}

// finish splices in the new nodes and initializers and drops what moved
// into sparse forms or lost its last reader, graph input entries included (an input of the same
// name would shadow the Constant: a value has one producer).
func (e *editor) finish() {
	g := e.g
	if len(e.before)+len(e.after) > 0 {
		nodes := make([]*pb.NodeProto, 0, len(g.Node)+len(e.before)+len(e.after))
		for i, n := range g.Node {
			nodes = append(nodes, e.before[i]...)
			nodes = append(nodes, n)
			nodes = append(nodes, e.after[i]...)
		}
		g.Node = nodes
	}
	if len(e.redirected) > 0 {
		// A shared bias every user of which got its own copy is dead now.
		// Only those are dropped: initializers that were unused in the
		// source are left as they were.
		now := onnxio.NewGraph(g)
		for name := range e.redirected {
			if len(now.Consumers[name]) == 0 && !now.IsOutput[name] && now.Initializer[name] != nil {
				e.removeInit[name] = true
			}
		}
	}
	if len(e.removeInit) > 0 {
		inits := g.Initializer[:0:0]
		for _, t := range g.Initializer {
			if !e.removeInit[t.GetName()] {
				inits = append(inits, t)
			}
		}
		g.Initializer = inits
		inputs := g.Input[:0:0]
		for _, v := range g.Input {
			if !e.removeInit[v.GetName()] {
				inputs = append(inputs, v)
			}
		}
		g.Input = inputs
	}
	g.Initializer = append(g.Initializer, e.newInits...)
	g.SparseInitializer = append(g.SparseInitializer, e.newSparse...)
}

// setMetadata sets key to value in metadata_props, replacing the first
// entry of that key and dropping duplicates (keys must be unique).
func setMetadata(mp *pb.ModelProto, key, value string) {
	props := mp.MetadataProps[:0:0]
	found := false
	for _, kv := range mp.MetadataProps {
		if kv.GetKey() != key {
			props = append(props, kv)
			continue
		}
		if !found {
			found = true
			kv.Value = proto.String(value)
			props = append(props, kv)
		}
	}
	if !found {
		props = append(props, &pb.StringStringEntryProto{Key: proto.String(key), Value: proto.String(value)})
	}
	mp.MetadataProps = props
}

// CheckFormat says, before any work, why model m cannot be written in
// format f (nil: it can). Auto always can: it falls back to dense.
func CheckFormat(m *onnxio.Model, f Format) error {
	if f != Constant && f != SparseInitializer {
		return nil
	}
	e := &editor{opset: m.Opset(""), ir: m.Proto.GetIrVersion()}
	if err := e.sparseAllowed(f); err != nil {
		return &onnxio.BadInputError{File: m.Path, Msg: "--format " + string(f) + ": " + err.Error()}
	}
	return nil
}

// SparseNote is a note for a model that cannot hold sparse tensors at all
// (auto then writes dense: the file is not smaller), or "".
func SparseNote(m *onnxio.Model) string {
	if m.Proto.GetIrVersion() >= minSparseIR && m.Opset("") >= minConstantOpset {
		return ""
	}
	return fmt.Sprintf("the model (IR version %d, opset %d) cannot hold sparse tensors (IR >= %d and opset >= %d needed), so the pruned weights are stored dense with zeros and the file is no smaller (gzip still shrinks it); to store them sparse, convert the model to opset %d or newer first (python: onnx.version_converter.convert_version(model, %d))",
		m.Proto.GetIrVersion(), m.Opset(""), minSparseIR, minConstantOpset, minConstantOpset, minConstantOpset)
}

// block returns the assembly of a tensor written in blocks, starting from
// its original values.
func (e *editor) block(m map[string]*blockWrite, order *[]string, init *pb.TensorProto, l *onnxio.Layer) (*blockWrite, error) {
	if bw := m[init.GetName()]; bw != nil {
		return bw, nil
	}
	vals, err := e.model.Floats(init)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", init.GetName(), err)
	}
	bw := &blockWrite{init: init, vals: slices.Clone(vals), written: make([]bool, len(vals)), layer: l}
	m[init.GetName()] = bw
	*order = append(*order, init.GetName())
	return bw, nil
}

// put stores the values of one writer at positions off+k, refusing a
// different value where another writer stored one.
func (bw *blockWrite) put(l *onnxio.Layer, at func(k int) int, vals []float64) error {
	for k, v := range vals {
		p := at(k)
		if p < 0 || p >= len(bw.vals) {
			return fmt.Errorf("element %d of %s is out of its %d values: the layer is not from this model", p, bw.init.GetName(), len(bw.vals))
		}
		if bw.written[p] && math.Float64bits(bw.vals[p]) != math.Float64bits(v) {
			return fmt.Errorf("%s: element %d is %g for this layer and %g for layer %s, which read the same tensor",
				bw.init.GetName(), p, v, bw.vals[p], bw.layer.Name)
		}
		bw.vals[p], bw.written[p] = v, true
	}
	return nil
}

// applyBlock writes a layer whose weight is a block of rows of a tensor
// other layers read blocks of: its values go into the tensor's assembly,
// encoded once by flushBlocks; its bias is written like any other.
func (e *editor) applyBlock(u Update, n *pb.NodeProto) (TensorResult, error) {
	l := u.Layer
	init, err := e.tiedSource(l)
	if err != nil {
		return TensorResult{}, err
	}
	dt, dims := init.GetDataType(), init.GetDims()
	cols := int64(l.In)
	if l.WeightLayout == onnxio.LayoutInOut {
		cols = int64(l.Out)
	}
	if len(dims) != 2 || dims[0] != int64(l.WeightRows) || dims[1] != cols || dt != l.WeightType ||
		l.WeightRow0 < 0 || l.WeightRow0+l.BlockRows() > l.WeightRows {
		return TensorResult{}, fmt.Errorf("initializer %s is %s %s, the layer expects rows %d to %d of %s [%d, %d]: the layer is not from this model",
			init.GetName(), onnxio.TypeName(dt), plain.Shape(dims), l.WeightRow0, l.WeightRow0+l.BlockRows(), onnxio.TypeName(l.WeightType), l.WeightRows, cols)
	}
	if l.Alpha == 0 {
		return TensorResult{}, fmt.Errorf("Gemm alpha is 0, so no weight can be written")
	}
	bw, err := e.block(e.blocks, &e.blockOrder, init, l)
	if err != nil {
		return TensorResult{}, err
	}
	vals := make([]float64, len(u.W))
	for q, v := range u.W {
		vals[q] = stored(dt, v, l.Alpha)
	}
	if err := bw.put(l, l.StoredIndex, vals); err != nil {
		return TensorResult{}, err
	}
	if u.B != nil {
		if err := e.writeBias(l, n, u.B); err != nil {
			return TensorResult{}, err
		}
	}
	return TensorResult{Layer: l.Name, Tensor: init.GetName()}, nil
}

// writeBiasBlock writes a bias that is a block of a bias tensor, read
// through the Slice node that feeds slot.
func (e *editor) writeBiasBlock(l *onnxio.Layer, slot string, b []float64) error {
	p, ok := e.idx.Producer[slot]
	if !ok || e.g.Node[p].GetOpType() != "Slice" || len(e.g.Node[p].Input) == 0 || e.g.Node[p].Input[0] != l.BiasInit || !e.exclusive(slot) {
		return fmt.Errorf("bias %s is not a Slice of %s read by this layer alone: the layer is not from this model", slot, l.BiasInit)
	}
	init := e.idx.Initializer[l.BiasInit]
	if init == nil || e.idx.IsOutput[l.BiasInit] || onnxio.NumElements(init.GetDims()) != int64(l.BiasRows) ||
		l.BiasOff < 0 || l.BiasOff+l.Out > l.BiasRows || init.GetDataType() != l.BiasType {
		return fmt.Errorf("bias %s does not hold %d values at %d of %d: the layer is not from this model", l.BiasInit, l.Out, l.BiasOff, l.BiasRows)
	}
	if l.Beta == 0 {
		return fmt.Errorf("Gemm beta is 0, so the bias cannot be changed")
	}
	bw, err := e.block(e.biasBlocks, &e.biasesOrder, init, l)
	if err != nil {
		return err
	}
	vals := make([]float64, len(b))
	for i, v := range b {
		vals[i] = stored(l.BiasType, v, l.Beta)
	}
	return bw.put(l, func(k int) int { return l.BiasOff + k }, vals)
}

// flushBlocks encodes the tensors written in blocks, each once, and fills
// in the results of their writers (the first holds the write, the others
// name it, like a tie's).
func (e *editor) flushBlocks(results []TensorResult) error {
	byTensor := map[string][]int{}
	for k, r := range results {
		if e.blocks[r.Tensor] != nil && r.Format == "" {
			byTensor[r.Tensor] = append(byTensor[r.Tensor], k)
		}
	}
	for _, name := range e.blockOrder {
		bw := e.blocks[name]
		r, err := e.encodeWeight(bw.layer, bw.init, bw.init.GetDims(), bw.vals)
		if err != nil {
			return fmt.Errorf("layer %s: %w", bw.layer.Name, err)
		}
		for j, k := range byTensor[name] {
			rk := r
			rk.Layer = results[k].Layer
			if j > 0 {
				rk.Bytes, rk.DenseBytes, rk.TiedWith = 0, 0, results[byTensor[name][0]].Layer
			}
			results[k] = rk
		}
	}
	for _, name := range e.biasesOrder {
		bw := e.biasBlocks[name]
		e.replaceInit(name, onnxio.EncodeFloats(bw.init, bw.init.GetDims(), bw.vals))
	}
	return nil
}
