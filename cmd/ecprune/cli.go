package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// Exit statuses, documented in the README.
const (
	exitOK    = 0
	exitError = 1
	exitBad   = 2
)

// command is one subcommand; each lives in its own file.
type command struct {
	name     string
	summary  string // one line
	usage    string // argument synopsis
	examples []string
	flags    func(fs *pflag.FlagSet) // registers the command's own flags
	run      func(e *env, args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// env is what a running command gets: its output streams and the common
// flags.
type env struct {
	stdout, stderr io.Writer
	fs             *pflag.FlagSet
	json           bool
	quiet          bool
	verbose        bool
	progress       string
	stderrTTY      bool
}

// usageError is bad usage: exit 2 with a hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// logf writes a log line to stderr unless --quiet.
func (e *env) logf(format string, args ...any) {
	if !e.quiet {
		fmt.Fprintf(e.stderr, "ecprune: "+format+"\n", args...)
	}
}

// debugf writes a log line only with --verbose.
func (e *env) debugf(format string, args ...any) {
	if e.verbose && !e.quiet {
		fmt.Fprintf(e.stderr, "ecprune: "+format+"\n", args...)
	}
}

// output prints a command's result: as one JSON document with --json,
// else as text.
func (e *env) output(v any, text func(w io.Writer)) error {
	if e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(e.stdout)
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printHelp(stderr)
		return exitBad
	}
	name := args[0]
	switch name {
	case "-h", "--help", "help":
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				printCommandHelp(stdout, c)
				return exitOK
			}
			fmt.Fprintf(stderr, "ecprune: unknown command %q\n", args[1])
			return exitBad
		}
		printHelp(stdout)
		return exitOK
	case "-v", "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "ecprune: unknown command %q (see 'ecprune help')\n", name)
		return exitBad
	}
	e := &env{stdout: stdout, stderr: stderr}
	if f, ok := stderr.(*os.File); ok {
		e.stderrTTY = term.IsTerminal(int(f.Fd()))
	}
	fs := pflag.NewFlagSet("ecprune "+c.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.BoolVar(&e.json, "json", false, "print one JSON document on stdout (errors too, as {\"error\": ...})")
	fs.BoolVarP(&e.quiet, "quiet", "q", false, "no log lines or progress on stderr")
	fs.BoolVar(&e.verbose, "verbose", false, "more log lines on stderr")
	fs.StringVar(&e.progress, "progress", "auto", "progress bar: auto (when stderr is a terminal), always, never")
	help := fs.BoolP("help", "h", false, "show this help")
	if c.flags != nil {
		c.flags(fs)
	}
	e.fs = fs
	err := fs.Parse(args[1:])
	if err == nil && *help {
		printCommandHelp(stdout, c)
		return exitOK
	}
	if err == nil {
		switch e.progress {
		case "auto", "always", "never":
		default:
			err = usagef("--progress %q: want auto, always or never", e.progress)
		}
	}
	if err != nil {
		if !errors.As(err, new(*usageError)) {
			err = &usageError{err.Error()}
		}
	} else {
		err = c.run(e, fs.Args())
	}
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	msg := oneLine(err.Error())
	fmt.Fprintf(stderr, "ecprune %s: %s\n", c.name, msg)
	if code == exitBad && errors.As(err, new(*usageError)) {
		fmt.Fprintf(stderr, "usage: ecprune %s %s (see 'ecprune %s --help')\n", c.name, c.usage, c.name)
	}
	if e.json {
		kind := "error"
		if code == exitBad {
			kind = "bad_input"
		}
		json.NewEncoder(stdout).Encode(map[string]any{"error": map[string]any{"message": msg, "kind": kind, "exit_code": code, "command": c.name}})
	}
	return code
}

// exitCode maps an error to the documented exit statuses.
func exitCode(err error) int {
	var (
		u  *usageError
		b  *onnxio.BadInputError
		d  *calib.DataError
		o  *prune.OptionError
		be *analysis.BudgetError
	)
	switch {
	case errors.As(err, &u), errors.As(err, &b), errors.As(err, &d), errors.As(err, &o), errors.As(err, &be):
		return exitBad
	}
	return exitError
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "ecprune prunes the fully-connected layers of ONNX models: each removed weight's")
	fmt.Fprintln(w, "neuron gets a bias shift that compensates for it (elimination-compensation pruning).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: ecprune COMMAND [flags] ARGS")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'ecprune COMMAND --help' for a command's flags and examples.")
	fmt.Fprintln(w, "Exit status: 0 success, 2 bad input or usage, 1 any other failure.")
}

func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "ecprune %s: %s\n\nUsage: ecprune %s %s\n", c.name, c.summary, c.name, c.usage)
	if len(c.examples) > 0 {
		fmt.Fprintln(w, "\nExamples:")
		for _, ex := range c.examples {
			fmt.Fprintf(w, "  %s\n", ex)
		}
	}
	fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
	fs.SortFlags = false
	if c.flags != nil {
		c.flags(fs)
	}
	fs.Bool("json", false, "print one JSON document on stdout (errors too, as {\"error\": ...})")
	fs.BoolP("quiet", "q", false, "no log lines or progress on stderr")
	fs.Bool("verbose", false, "more log lines on stderr")
	fs.String("progress", "auto", "progress bar: auto (when stderr is a terminal), always, never")
	fmt.Fprintln(w, "\nFlags (default in brackets where there is one):")
	fmt.Fprint(w, fs.FlagUsages())
}
