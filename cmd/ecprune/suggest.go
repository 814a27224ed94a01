package main

import (
	"errors"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune"
)

// flagHint adds "did you mean --X?" to an unknown-flag error.
func flagHint(err error, fs *pflag.FlagSet) error {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) || ne.GetSpecifiedName() == "" {
		return err
	}
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	if s := ecprune.Suggest(ne.GetSpecifiedName(), names); s != "" {
		return usagef("%v (did you mean --%s?)", err, s)
	}
	return err
}

// methodHint adds "did you mean X?" for a mistyped method name.
func methodHint(name string, known []string) string {
	if s := ecprune.Suggest(name, known); s != "" {
		return " (did you mean " + s + "?)"
	}
	return ""
}
