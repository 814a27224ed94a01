package onnxio

// Roles name what a dense layer does in its model (attention projection,
// FFN, head...), read from the graph's structure alone: the ops around the
// layer, never the names an exporter gave them. They are for people
// reading `inspect` and the reports; no analysis depends on them.

// Role is what a dense layer does in the model, as the graph shows it.
type Role int

// The roles. RoleDense is every layer whose role the graph does not make
// clear.
const (
	RoleDense      Role = iota
	RoleQuery           // projects the queries of an attention: left operand of the scores product
	RoleKey             // projects the keys: right operand of the scores product
	RoleValue           // projects the values: the operand the attention weights multiply
	RoleInProj          // one layer split into several of q, k, v (packed in-projection)
	RoleAttnOut         // reads the attention's weighted values
	RoleFFNIn           // first layer of a residual dense-activation-dense block
	RoleFFNOut          // second layer of that block, its output added back
	RoleHidden          // followed by an activation and another dense layer, no residual
	RoleHead            // its output reaches a graph output through no further layer
	RolePatchEmbed      // applied to patches cut from an image input by reshapes
	RoleKeyValue        // one layer split into the keys and values only (cross-attention's packed k/v)
)

var roleNames = [...]string{"dense", "attention q", "attention k", "attention v", "attention in-projection (fused)",
	"attention output projection", "FFN in", "FFN out", "MLP hidden", "head", "patch embedding",
	"attention k/v (packed)"}

func (r Role) String() string {
	if int(r) >= 0 && int(r) < len(roleNames) {
		return roleNames[r]
	}
	return "role?"
}

// MarshalText writes the role's name (JSON reports carry the name).
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// roleGraph indexes a network for the role analysis.
type roleGraph struct {
	net       *Network
	producer  []int   // value id -> op index, -1 for inputs and constants
	consumers [][]int // value id -> op indices reading it
	data      []bool  // value depends on a graph input through more than its shape
	input     map[int]*Input
	isOutput  []bool
}

func newRoleGraph(n *Network) *roleGraph {
	g := &roleGraph{net: n, producer: make([]int, len(n.Values)), consumers: make([][]int, len(n.Values)),
		data: make([]bool, len(n.Values)), input: map[int]*Input{}, isOutput: make([]bool, len(n.Values))}
	for i := range g.producer {
		g.producer[i] = -1
	}
	for k := range n.Inputs {
		in := &n.Inputs[k]
		g.input[in.Value] = in
		g.data[in.Value] = true
	}
	for i := range n.Ops {
		op := &n.Ops[i]
		g.producer[op.Out] = i
		d := false
		for _, v := range op.In {
			g.consumers[v] = append(g.consumers[v], i)
			d = d || g.data[v]
		}
		if op.Kind == OpNode && (op.Type == "Shape" || op.Type == "Size") {
			d = false // the shape of data is known without its values
		}
		g.data[op.Out] = d
	}
	for _, v := range n.Outputs {
		g.isOutput[v] = true
	}
	return g
}

// dataInputs are the inputs of an op that carry activations (not shapes,
// indices or constants).
func (g *roleGraph) dataInputs(op *Op) []int {
	var out []int
	for _, v := range op.In {
		if g.data[v] {
			out = append(out, v)
		}
	}
	return out
}

// moveOp reports whether an op only rearranges or reinterprets its data
// input (reshapes, transposes, identity, casts), and splitOp whether it
// takes part of it.
func moveOp(op *Op) bool {
	switch op.Kind {
	case OpIdentity, OpCast, OpFlatten, OpReshape, OpSqueeze, OpUnsqueeze:
		return true
	case OpNode:
		switch op.Type {
		case "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout", "Cast", "Expand":
			return true
		}
	}
	return false
}

func splitOp(op *Op) bool {
	return op.Kind == OpNode && (op.Type == "Split" || op.Type == "Slice" || op.Type == "Gather")
}

// scaleOp reports whether an op is elementwise arithmetic with exactly one
// activation operand (a scale, a bias, a mask): it keeps which layer an
// attention operand comes from.
func (g *roleGraph) scaleOp(op *Op) bool {
	switch op.Kind {
	case OpAdd, OpSub, OpMul, OpDiv:
		return len(g.dataInputs(op)) == 1
	}
	return false
}

// activationOp reports whether an op is elementwise and nonlinear: the
// activation between the two layers of an FFN (Relu, Gelu and its Erf
// decomposition, SiLU's Sigmoid, Tanh...).
func activationOp(op *Op) bool {
	switch op.Kind {
	case OpRelu, OpLeakyRelu, OpPRelu, OpTanh, OpSigmoid, OpHardSigmoid, OpHardSwish, OpElu, OpSelu, OpSoftplus, OpGelu, OpErf:
		return true
	case OpNode:
		switch op.Type {
		case "Erf", "Tanh", "Sigmoid", "Relu", "Gelu", "Celu", "Mish", "Softsign", "Swish", "ThresholdedRelu", "Clip", "Exp", "Pow", "Sqrt", "Abs":
			return true
		}
	}
	return false
}

// elementwiseOp reports whether an op acts elementwise on activations
// (activations, arithmetic, casts): the ops an activation function is
// built from.
func elementwiseOp(op *Op) bool {
	if activationOp(op) {
		return true
	}
	switch op.Kind {
	case OpIdentity, OpCast, OpAdd, OpSub, OpMul, OpDiv, OpBatchNorm:
		return true
	case OpNode:
		switch op.Type {
		case "Dropout", "Identity", "Cast", "Neg", "Reciprocal", "Add", "Sub", "Mul", "Div", "Round", "Floor", "Ceil", "Sign":
			return true
		}
	}
	return false
}

// productOp reports whether an op is a product of two activations (an
// attention's scores or weighted values).
func (g *roleGraph) productOp(op *Op) bool {
	return op.Kind == OpNode && (op.Type == "MatMul" || op.Type == "Einsum") && len(g.dataInputs(op)) == 2
}

// traceBack follows value v up through moves, splits and scalings to the
// dense op that produced it; split says whether the way went through a
// split (the layer's output is shared out).
func (g *roleGraph) traceBack(v int) (dense int, split bool) {
	for steps := 0; steps < 64; steps++ {
		p := g.producer[v]
		if p < 0 {
			return -1, split
		}
		op := &g.net.Ops[p]
		if op.Kind == OpDense {
			return p, split
		}
		d := g.dataInputs(op)
		if len(d) != 1 || !(moveOp(op) || splitOp(op) || g.scaleOp(op)) {
			return -1, split
		}
		split = split || splitOp(op)
		v = d[0]
	}
	return -1, split
}

// productBefore finds, going up from value v through scalings, masks and
// moves, the product of two activations it comes from (an attention's
// scores before their Softmax), or -1.
func (g *roleGraph) productBefore(v int, depth int) int {
	p := g.producer[v]
	if p < 0 || depth > 16 {
		return -1
	}
	op := &g.net.Ops[p]
	if g.productOp(op) {
		return p
	}
	ok := moveOp(op) || elementwiseOp(op) && !activationOp(op) || op.Kind == OpNode && op.Type == "Where"
	if !ok {
		return -1
	}
	for _, in := range g.dataInputs(op) {
		if m := g.productBefore(in, depth+1); m >= 0 {
			return m
		}
	}
	return -1
}

// reachForward lists the ops reading value v through ops pass lets
// through (their data inputs), in graph order without repeats; stop
// says which ops end a path (they are listed, not crossed).
func (g *roleGraph) reachForward(v int, pass func(op *Op) bool, stop func(op *Op) bool) []int {
	seen := map[int]bool{}
	var out []int
	var walk func(v, depth int)
	walk = func(v, depth int) {
		if depth > 32 {
			return
		}
		for _, c := range g.consumers[v] {
			if seen[c] {
				continue
			}
			seen[c] = true
			op := &g.net.Ops[c]
			if !g.data[op.Out] && !stop(op) {
				continue // a shape read
			}
			if stop(op) {
				out = append(out, c)
				continue
			}
			if pass(op) {
				walk(op.Out, depth+1)
			}
		}
	}
	walk(v, 0)
	return out
}

// AssignRoles sets the Role of every layer from the graph's structure. A
// layer used by several dense ops (a shared weight) takes the role of its
// first use. Extract calls it; it is exported for networks built by hand.
func (n *Network) AssignRoles() {
	g := newRoleGraph(n)
	role := map[int]Role{} // dense op index -> role
	set := func(op int, r Role) {
		if op < 0 {
			return
		}
		if old, ok := role[op]; ok && old != r && old == RoleInProj {
			return // a packed projection stays one
		}
		role[op] = r
	}
	isDense := func(op *Op) bool { return op.Kind == OpDense }
	// The parts of attention a split layer serves: k and v alone make it
	// cross-attention's packed key/value projection.
	parts := map[int]map[Role]bool{}
	split := func(d int, r Role) {
		if d < 0 {
			return
		}
		set(d, RoleInProj)
		if parts[d] == nil {
			parts[d] = map[Role]bool{}
		}
		parts[d][r] = true
	}
	// Attention: every Softmax whose input comes from a product of two
	// activations (the scores) and whose output multiplies another
	// activation (the values).
	for i := range n.Ops {
		op := &n.Ops[i]
		if op.Kind != OpSoftmax && !(op.Kind == OpNode && op.Type == "Softmax") {
			continue
		}
		if len(op.In) == 0 {
			continue
		}
		scores := g.productBefore(op.In[0], 0)
		if scores < 0 {
			continue
		}
		attnRoles := []Role{RoleQuery, RoleKey}
		for k, v := range g.dataInputs(&n.Ops[scores]) {
			d, isSplit := g.traceBack(v)
			if isSplit {
				split(d, attnRoles[k])
			} else {
				set(d, attnRoles[k])
			}
		}
		weights := g.reachForward(op.Out, func(o *Op) bool { return moveOp(o) || g.scaleOp(o) }, g.productOp)
		for _, m := range weights {
			mop := &n.Ops[m]
			for _, v := range g.dataInputs(mop) {
				if g.fromSoftmax(v, i) {
					continue
				}
				d, isSplit := g.traceBack(v)
				if isSplit {
					split(d, RoleValue)
				} else {
					set(d, RoleValue)
				}
			}
			for _, d := range g.reachForward(mop.Out, func(o *Op) bool {
				return moveOp(o) || o.Kind == OpNode && o.Type == "Concat"
			}, isDense) {
				if _, ok := role[d]; !ok {
					set(d, RoleAttnOut)
				}
			}
		}
	}
	for d, p := range parts {
		if len(p) == 2 && p[RoleKey] && p[RoleValue] && role[d] == RoleInProj {
			role[d] = RoleKeyValue
		}
	}
	// Patch embeddings, heads, FFNs and hidden layers, for the dense ops
	// the attention left unnamed.
	for i := range n.Ops {
		op := &n.Ops[i]
		if op.Kind != OpDense {
			continue
		}
		if _, ok := role[i]; ok {
			continue
		}
		switch {
		case g.patchEmbedding(op):
			role[i] = RolePatchEmbed
		case g.head(op):
			role[i] = RoleHead
		}
	}
	for i := range n.Ops {
		op := &n.Ops[i]
		if op.Kind != OpDense {
			continue
		}
		next := g.afterActivation(op)
		if next < 0 {
			continue
		}
		if g.residual(op, &n.Ops[next]) {
			if _, ok := role[i]; !ok {
				role[i] = RoleFFNIn
			}
			if _, ok := role[next]; !ok {
				role[next] = RoleFFNOut
			}
		} else if _, ok := role[i]; !ok {
			role[i] = RoleHidden
		}
	}
	done := map[*Layer]bool{}
	for i := range n.Ops {
		op := &n.Ops[i]
		if op.Kind != OpDense || op.Layer == nil || done[op.Layer] {
			continue
		}
		done[op.Layer] = true
		op.Layer.Role = role[i] // absent: RoleDense
	}
}

// fromSoftmax reports whether value v comes from the output of op sm
// through moves and scalings (the attention weights themselves).
func (g *roleGraph) fromSoftmax(v, sm int) bool {
	for steps := 0; steps < 64; steps++ {
		p := g.producer[v]
		if p == sm {
			return true
		}
		if p < 0 {
			return false
		}
		op := &g.net.Ops[p]
		d := g.dataInputs(op)
		if len(d) != 1 || !(moveOp(op) || g.scaleOp(op)) {
			return false
		}
		v = d[0]
	}
	return false
}

// patchEmbedding reports whether a dense op reads an image input cut into
// patches: its input comes from a graph input of rank 4 or more through
// rearrangements alone, and it contracts fewer values than one image holds
// (so each sample gives several rows: the patches).
func (g *roleGraph) patchEmbedding(op *Op) bool {
	v := op.In[0]
	rearranged := false
	for steps := 0; steps < 64; steps++ {
		if in, ok := g.input[v]; ok {
			if len(in.Shape) < 4 || !rearranged {
				return false
			}
			size := int64(1)
			for _, d := range in.Shape[1:] {
				if d <= 0 {
					return true // unknown image size: the rearrangement decides
				}
				size *= d
			}
			return int64(op.Layer.In) < size
		}
		p := g.producer[v]
		if p < 0 {
			return false
		}
		o := &g.net.Ops[p]
		d := g.dataInputs(o)
		if len(d) != 1 || !(moveOp(o) || splitOp(o)) {
			return false
		}
		rearranged = true
		v = d[0]
	}
	return false
}

// head reports whether a dense op's output reaches a graph output through
// shape-preserving or elementwise ops alone (Softmax, LogSoftmax,
// Identity, Flatten, a scaling, the sum of two heads) or the ArgMax that
// reads the class off it, with no further dense layer.
func (g *roleGraph) head(op *Op) bool {
	if g.isOutput[op.Out] {
		return true
	}
	seen := map[int]bool{}
	var walk func(v, depth int) bool
	walk = func(v, depth int) bool {
		if g.isOutput[v] {
			return true
		}
		if depth > 16 {
			return false
		}
		for _, c := range g.consumers[v] {
			if seen[c] {
				continue
			}
			seen[c] = true
			o := &g.net.Ops[c]
			if (splitOp(o) || o.Kind == OpNode && o.Type == "GatherElements") && len(o.Slots) > 0 && o.Slots[0] >= 0 && o.In[o.Slots[0]] != v {
				continue // v is the indices, not the data
			}
			through := moveOp(o) || splitOp(o) || o.Kind == OpNode && o.Type == "GatherElements" || elementwiseOp(o) || o.Kind == OpSoftmax || o.Kind == OpLogSoftmax ||
				o.Kind == OpNode && (o.Type == "Softmax" || o.Type == "LogSoftmax" || o.Type == "ArgMax" || o.Type == "ArgMin")
			if through && walk(o.Out, depth+1) {
				return true
			}
		}
		return false
	}
	return walk(op.Out, 0)
}

// afterActivation finds the dense op that reads a dense op's output
// through elementwise ops including a nonlinearity, every activation on
// the way computed from that output alone (x * sigmoid(x), the Erf form of
// Gelu), or -1.
func (g *roleGraph) afterActivation(op *Op) int {
	chain := map[int]bool{op.Out: true}
	nonlinear := map[int]bool{}
	// horizon: the last op reading a value of the chain; nothing after it
	// can extend the chain.
	horizon := -1
	reach := func(v int) {
		if c := g.consumers[v]; len(c) > 0 {
			horizon = max(horizon, c[len(c)-1])
		}
	}
	reach(op.Out)
	start := g.producer[op.Out] + 1
	for i := start; i < len(g.net.Ops) && i <= horizon; i++ {
		o := &g.net.Ops[i]
		d := g.dataInputs(o)
		if len(d) == 0 {
			continue
		}
		all, any, nl := true, false, false
		for _, v := range d {
			if chain[v] {
				any = true
				nl = nl || nonlinear[v]
			} else {
				all = false
			}
		}
		if !any {
			continue
		}
		if o.Kind == OpDense {
			if nl && all {
				return i
			}
			continue
		}
		if !all || !(elementwiseOp(o) || moveOp(o) || splitOp(o)) {
			continue
		}
		chain[o.Out] = true
		nonlinear[o.Out] = nl || activationOp(o)
		reach(o.Out)
	}
	return -1
}

// residual reports whether the output of the dense op second is added
// back to what the dense op first read (or to something it was computed
// from): the skip connection around an FFN block.
func (g *roleGraph) residual(first, second *Op) bool {
	adds := g.reachForward(second.Out, func(o *Op) bool { return moveOp(o) || g.scaleOp(o) }, func(o *Op) bool {
		return o.Kind == OpAdd && len(o.In) == 2
	})
	if len(adds) == 0 {
		return false
	}
	targets := map[int]bool{}
	for _, a := range adds {
		for _, v := range g.net.Ops[a].In {
			targets[v] = true
		}
	}
	return g.reachesBack(first.In[0], targets)
}

// reachesBack tells whether v is computed from any of the targets (v
// itself included). The walk stops at the first one it meets: a layer
// with no residual Add after it costs nothing, and one with an Add
// usually finds the residual stream a few ops up, so that assigning
// roles along a deep network stays linear in its depth.
func (g *roleGraph) reachesBack(v int, targets map[int]bool) bool {
	seen := map[int]bool{}
	stack := []int{v}
	for len(stack) > 0 {
		u := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[u] {
			continue
		}
		if targets[u] {
			return true
		}
		seen[u] = true
		if p := g.producer[u]; p >= 0 {
			stack = append(stack, g.dataInputs(&g.net.Ops[p])...)
		}
	}
	return false
}
