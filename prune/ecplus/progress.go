package ecplus

// progress reports one phase at a time to Options.Progress (f, nil: no
// reports). done never decreases within a phase and ends at total.
type progress struct {
	f           func(phase string, done, total int)
	phase       string
	done, total int
}

func (p *progress) start(phase string, total int) {
	p.phase, p.done, p.total = phase, 0, total
	p.report()
}

func (p *progress) add(n int) {
	p.done = min(p.total, p.done+n)
	p.report()
}

func (p *progress) end() {
	p.done = p.total
	p.report()
}

func (p *progress) report() {
	if p.f != nil {
		p.f(p.phase, p.done, p.total)
	}
}

// selectionSteps is the length of the selection phase: per layer, its
// first pass and, if it loses weights, one step per greedy round.
func selectionSteps(ks []int, rounds int) int {
	n := 0
	for _, k := range ks {
		n++
		if k > 0 {
			n += rounds
		}
	}
	return n
}
