package main

// ecplusProgress shows ec+'s phases (ecplus.Options.Progress) with the
// progress printer, one per phase; finish closes the last one.
func (e *env) ecplusProgress() (report func(phase string, done, total int), finish func()) {
	var p *progress
	phase := ""
	report = func(ph string, done, total int) {
		if p == nil || ph != phase {
			p.finish()
			p, phase = e.newProgress(ph, total), ph
		}
		p.set(done, total)
	}
	return report, func() { p.finish() }
}
