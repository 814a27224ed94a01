package ecprune

import "fmt"

// Events receives what a long run reports: log lines and the progress of
// its phases. The command prints them on stderr; a nil Events is silent.
// Methods may be called from several goroutines.
type Events interface {
	// Log is a line worth showing: what was decided, warnings.
	Log(msg string)
	// Debug is a detail for verbose runs.
	Debug(msg string)
	// Progress says that done of total units of a phase are finished
	// ("analysis": samples, "exact": weights, "sweep": points). A phase
	// starts with done 0.
	Progress(phase string, done, total int)
	// End closes a phase, whether it finished or failed.
	End(phase string)
}

// quiet is the Events of a nil Events.
type quiet struct{}

func (quiet) Log(string)                {}
func (quiet) Debug(string)              {}
func (quiet) Progress(string, int, int) {}
func (quiet) End(string)                {}

func events(e Events) Events {
	if e == nil {
		return quiet{}
	}
	return e
}

// logf and debugf adapt Events to the printf-style hooks of the packages
// below.
func logf(e Events) func(string, ...any) {
	return func(format string, args ...any) { e.Log(fmt.Sprintf(format, args...)) }
}

func debugf(e Events) func(string, ...any) {
	return func(format string, args ...any) { e.Debug(fmt.Sprintf(format, args...)) }
}

// phase reports the progress of one phase.
type phase struct {
	e    Events
	name string
}

func startPhase(e Events, name string, total int) *phase {
	e.Progress(name, 0, total)
	return &phase{e: e, name: name}
}

func (p *phase) set(done, total int) { p.e.Progress(p.name, done, total) }
func (p *phase) end()                { p.e.End(p.name) }
