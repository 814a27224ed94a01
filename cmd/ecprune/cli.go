package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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
	// files lists, from the parsed flags and arguments, the files the run
	// reads and those it writes, checked against each other before it
	// starts.
	files func(args []string) (inputs, outputs []fileRef)
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// env is what a running command gets: its output streams and the common
// flags.
type env struct {
	stdout, stderr io.Writer
	fs             *pflag.FlagSet
	json           bool   // the result goes to stdout as JSON
	jsonFile       string // --json=FILE: the result also goes to FILE as JSON
	quiet          bool
	verbose        bool
	progress       string
	stderrTTY      bool
	bar            *progress // the progress bar on stderr, if one is showing

	// The files of the run: what it reads, what it writes (checked
	// against each other before any work), the outputs that follow from
	// a loaded model (its external data layout), and the stage that holds
	// every output until the run has succeeded.
	inputs, outputs []fileRef
	derived         func(*onnxio.Model) []fileRef
	loadedCheck     func(*onnxio.Model) error // more checks of a loaded input model
	stage           *onnxio.Stage
}

// usageError is bad usage: exit 2 with a hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// logf writes a log line to stderr unless --quiet.
func (e *env) logf(format string, args ...any) {
	if !e.quiet {
		e.aside(func() { fmt.Fprintf(e.stderr, "ecprune: "+format+"\n", args...) })
	}
}

// debugf writes a log line only with --verbose.
func (e *env) debugf(format string, args ...any) {
	if e.verbose && !e.quiet {
		e.aside(func() { fmt.Fprintf(e.stderr, "ecprune: "+format+"\n", args...) })
	}
}

// output prints a command's result: as one JSON document with --json,
// else as text.
//
// Every staged output is put in place first: the result is printed only
// for a run whose files are all written.
func (e *env) output(v any, text func(w io.Writer)) error {
	if e.jsonFile != "" {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding the JSON result: %w", err)
		}
		if err := e.stage.WriteFile(e.jsonFile, append(b, '\n')); err != nil {
			return err
		}
	}
	if err := e.stage.Commit(); err != nil {
		return err
	}
	if e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(e.stdout)
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	// ec+'s products and solves (package prune) go through gonum's BLAS:
	// they run on the analysis's kernels, and give the same bytes in every
	// program that prunes through ecprune.
	analysis.UseFastGemm()
	if len(args) == 0 {
		printHelp(stderr)
		return exitBad
	}
	name := args[0]
	switch name {
	case "-h", "--help", "help":
		// Flags (--json, --verbose...) may come with help; the first other
		// argument names the command.
		rest := slices.DeleteFunc(slices.Clone(args[1:]), func(a string) bool { return strings.HasPrefix(a, "-") })
		asJSON := wantsJSON(args[1:])
		if len(rest) > 0 {
			c, ok := commands[rest[0]]
			if !ok {
				msg := fmt.Sprintf("unknown command %q (see 'ecprune help')", rest[0])
				fmt.Fprintf(stderr, "ecprune: %s\n", msg)
				if asJSON {
					writeJSONError(stdout, msg, exitBad, "help")
				}
				return exitBad
			}
			if asJSON {
				return writeJSON(stdout, helpOf(c))
			}
			printCommandHelp(stdout, c)
			return exitOK
		}
		if asJSON {
			return writeJSON(stdout, helpOfAll())
		}
		printHelp(stdout)
		return exitOK
	case "-v", "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		var names []string
		for n := range commands {
			names = append(names, n)
		}
		msg := fmt.Sprintf("unknown command %q%s (see 'ecprune help')", name, methodHint(name, names))
		fmt.Fprintf(stderr, "ecprune: %s\n", msg)
		if wantsJSON(args[1:]) {
			writeJSONError(stdout, msg, exitBad, name)
		}
		return exitBad
	}
	e := &env{stdout: stdout, stderr: stderr, stage: &onnxio.Stage{}}
	if f, ok := stderr.(*os.File); ok {
		e.stderrTTY = term.IsTerminal(int(f.Fd()))
	}
	fs := pflag.NewFlagSet("ecprune "+c.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	help := e.registerCommon(fs)
	if c.flags != nil {
		c.flags(fs)
	}
	e.fs = fs
	err := fs.Parse(args[1:])
	if err != nil {
		err = flagHint(err, fs)
	}
	if err != nil && wantsJSON(args[1:]) {
		// Parsing stops at the first bad flag, possibly before --json:
		// the caller still asked for a JSON error.
		e.json = true
	}
	if err == nil && *help {
		if e.json {
			return writeJSON(stdout, helpOf(c))
		}
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
		if c.files != nil {
			e.inputs, e.outputs = c.files(fs.Args())
		}
		e.outputs = append(e.outputs, refs("--json=FILE", e.jsonFile)...)
		// Checked now rather than after a long run.
		if err = checkFiles(e.inputs, e.outputs); err == nil {
			stop := e.cleanUpOnSignal(c.name)
			err = c.run(e, fs.Args())
			if err != nil {
				e.stage.Abort()
			}
			stop()
		}
	}
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	msg := oneLine(cliMessage(err))
	line := msg
	if code == exitBad && errors.As(err, new(*usageError)) {
		// One line, so that scripts can rely on it: the hint goes on it.
		line += fmt.Sprintf(" (usage: ecprune %s %s; see 'ecprune %s --help')", c.name, c.usage, c.name)
	}
	fmt.Fprintf(stderr, "ecprune %s: %s\n", c.name, line)
	if e.json {
		writeJSONError(stdout, msg, code, c.name)
	}
	return code
}

// writeJSONError prints the error document of --json: {"error": {message,
// kind, exit_code, command}}, kind "bad_input" for exit status 2 and
// "error" otherwise. Scripts can rely on these field names.
func writeJSONError(w io.Writer, msg string, code int, cmd string) {
	kind := "error"
	if code == exitBad {
		kind = "bad_input"
	}
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "kind": kind, "exit_code": code, "command": cmd}})
}

// writeJSON prints v as the JSON document of a command that cannot fail
// otherwise (help), and returns its exit status.
func writeJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return exitError
	}
	return exitOK
}

// registerCommon adds the flags every command takes and returns --help's
// value. Help lists them from the same definitions.
func (e *env) registerCommon(fs *pflag.FlagSet) *bool {
	fs.Var(jsonFlag{e}, "json", "print the result as one JSON document on stdout (errors too, as {\"error\": {...}}); --json=`FILE` writes it to FILE instead and keeps the text on stdout")
	fs.Lookup("json").NoOptDefVal = "true"
	fs.BoolVarP(&e.quiet, "quiet", "q", false, "no log lines or progress on stderr")
	fs.BoolVar(&e.verbose, "verbose", false, "more log lines on stderr")
	fs.StringVar(&e.progress, "progress", "auto", "progress bar: auto (when stderr is a terminal), always, never")
	return fs.BoolP("help", "h", false, "show this help")
}

// jsonFlag is --json: bare (or =true) for JSON on stdout, =FILE for a file.
// One flag for both keeps --json uniform across commands while letting a
// command's JSON result be saved alongside its text output.
type jsonFlag struct{ e *env }

func (j jsonFlag) String() string {
	if j.e == nil || !j.e.json && j.e.jsonFile == "" {
		return "false"
	}
	if j.e.jsonFile != "" {
		return j.e.jsonFile
	}
	return "true"
}

func (j jsonFlag) Set(s string) error {
	switch s {
	case "true":
		j.e.json, j.e.jsonFile = true, ""
	case "false":
		j.e.json, j.e.jsonFile = false, ""
	case "":
		return errors.New("--json=FILE needs a file name")
	default:
		j.e.json, j.e.jsonFile = false, s
	}
	return nil
}

func (j jsonFlag) Type() string { return "json" }

// wantsJSON reports whether args ask for JSON on stdout, without parsing
// them (for errors found before or while parsing).
func wantsJSON(args []string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
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
	fmt.Fprintln(w, "Examples:")
	fmt.Fprintln(w, "  ecprune inspect model.onnx")
	fmt.Fprintln(w, "  ecprune prune model.onnx -o pruned.onnx --calib calib_x.npy --sparsity 0.8")
	fmt.Fprintln(w, "  ecprune eval pruned.onnx --data test_x.npy --labels test_y.npy --against model.onnx")
	fmt.Fprintln(w, "  ecprune sweep model.onnx --calib calib_x.npy --test test_x.npy --test-labels test_y.npy --plot sweep.png")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags every command takes:")
	fs := pflag.NewFlagSet("common", pflag.ContinueOnError)
	fs.SortFlags = false
	(&env{}).registerCommon(fs)
	fmt.Fprint(w, flagUsages(fs))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'ecprune COMMAND --help' for a command's flags and examples.")
	fmt.Fprintln(w, "Exit status: 0 success, 2 bad input or usage, 1 any other failure.")
}

// flagDoc and commandDoc are help as JSON (help --json), for tools that
// build forms or completions from it.
type flagDoc struct {
	Name      string `json:"name"`
	Shorthand string `json:"shorthand,omitempty"`
	Type      string `json:"type"`
	Default   string `json:"default"`
	Usage     string `json:"usage"`
}

type commandDoc struct {
	Name     string    `json:"name"`
	Summary  string    `json:"summary"`
	Usage    string    `json:"usage"`
	Examples []string  `json:"examples,omitempty"`
	Flags    []flagDoc `json:"flags"`
}

func flagDocs(fs *pflag.FlagSet) []flagDoc {
	var out []flagDoc
	fs.VisitAll(func(f *pflag.Flag) {
		_, usage := pflag.UnquoteUsage(f)
		out = append(out, flagDoc{f.Name, f.Shorthand, f.Value.Type(), f.DefValue, usage})
	})
	return out
}

func helpOf(c *command) commandDoc {
	fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
	fs.SortFlags = false
	if c.flags != nil {
		c.flags(fs)
	}
	(&env{}).registerCommon(fs)
	return commandDoc{Name: c.name, Summary: c.summary, Usage: "ecprune " + c.name + " " + c.usage, Examples: c.examples, Flags: flagDocs(fs)}
}

func helpOfAll() any {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	cmds := make([]commandDoc, len(names))
	for i, n := range names {
		cmds[i] = helpOf(commands[n])
	}
	fs := pflag.NewFlagSet("common", pflag.ContinueOnError)
	fs.SortFlags = false
	(&env{}).registerCommon(fs)
	return map[string]any{
		"commands": cmds, "common_flags": flagDocs(fs),
		"exit_codes": map[string]string{"0": "success", "1": "any other failure", "2": "bad input or usage"},
	}
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
	(&env{}).registerCommon(fs)
	fmt.Fprintln(w, "\nFlags:")
	fmt.Fprint(w, flagUsages(fs))
}

// flagUsages lists every flag with its default, zero values included:
// pflag's own listing hides defaults such as 0 and "", and help should say
// what leaving any flag out means.
func flagUsages(fs *pflag.FlagSet) string {
	var names, usages []string
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name := "      --" + f.Name
		if f.Shorthand != "" {
			name = "  -" + f.Shorthand + ", --" + f.Name
		}
		varname, usage := pflag.UnquoteUsage(f)
		switch {
		case varname == "":
		case f.NoOptDefVal != "":
			name += "[=" + varname + "]"
		default:
			name += " " + varname
		}
		// A usage that explains its default itself ("default: from the
		// labels' type", "required") is clearer than "(default none)".
		if !strings.Contains(usage, "default:") && !strings.Contains(usage, "required") {
			def := f.DefValue
			if def == "" || def == "[]" {
				def = "none"
			}
			usage += " (default " + def + ")"
		}
		names, usages = append(names, name), append(usages, usage)
		width = max(width, len(name))
	})
	// Usages wrap at 100 columns under their own column, so that help reads
	// in an ordinary terminal.
	col := max(40, 100-width-3)
	var b strings.Builder
	for i := range names {
		line, pad := "", fmt.Sprintf("%-*s   ", width, names[i])
		for _, word := range strings.Fields(usages[i]) {
			if line != "" && len(line)+1+len(word) > col {
				fmt.Fprintf(&b, "%s%s\n", pad, line)
				line, pad = "", strings.Repeat(" ", width+3)
			}
			if line != "" {
				line += " "
			}
			line += word
		}
		fmt.Fprintf(&b, "%s%s\n", pad, line)
	}
	return b.String()
}
