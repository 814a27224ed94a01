package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress shows how far a long step is: a bar with rate and time left
// when stderr is a terminal (or --progress always), else a plain log line
// at most every few seconds, so logs in CI stay readable and free of
// control characters.
type progress struct {
	mu    sync.Mutex
	e     *env
	label string
	bar   *progressbar.ProgressBar
	last  time.Time
	start time.Time
	total int
}

// progressUnits names what each progress bar counts, for its rate.
var progressUnits = map[string]string{"analysis": "samples", "sweep": "points", "exact": "weights"}

func (e *env) newProgress(label string, total int) *progress {
	p := &progress{e: e, label: label, total: total, start: time.Now(), last: time.Now()}
	if e.quiet || e.progress == "never" {
		return p
	}
	if e.progress == "always" || e.stderrTTY {
		unit := progressUnits[label]
		if unit == "" {
			unit = "it"
		}
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString(unit),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		// The clock starts now: otherwise it starts at the first update
		// and that update's rate is computed over microseconds.
		p.bar.StartWithoutRender()
		e.bar = p
	}
	return p
}

// aside runs print (a log line) with the bar cleared from the line, so
// that log lines and the bar do not end up on one line; the next update
// draws the bar again.
func (e *env) aside(print func()) {
	p := e.bar
	if p == nil {
		print()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.Clear()
	print()
}

// set reports that done of total units are finished; safe for concurrent
// use.
func (p *progress) set(done, total int) {
	if p == nil || p.e.quiet || p.e.progress == "never" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		if total != p.total {
			p.total = total
			p.bar.ChangeMax(total)
		}
		p.bar.Set(done)
		return
	}
	if now := time.Now(); now.Sub(p.last) >= 5*time.Second || (done == total && now.Sub(p.start) >= 5*time.Second) {
		p.last = now
		pct := 100 * float64(done) / float64(max(1, total))
		fmt.Fprintf(p.e.stderr, "ecprune: %s: %d/%d (%.0f%%) after %s\n", p.label, done, total, pct, now.Sub(p.start).Round(time.Second))
	}
}

func (p *progress) finish() {
	if p != nil && p.bar != nil {
		p.bar.Finish()
		if p.e.bar == p {
			p.e.bar = nil
		}
	}
}
