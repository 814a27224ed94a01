package main

import (
	"errors"
	"strings"

	"github.com/spf13/pflag"
)

// suggest returns the candidate closest to s by edit distance, if it is
// close enough to be a typo, else "".
func suggest(s string, candidates []string) string {
	best, bestD := "", len(s)/3+2
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// flagHint adds "did you mean --X?" to an unknown-flag error.
func flagHint(err error, fs *pflag.FlagSet) error {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) || ne.GetSpecifiedName() == "" {
		return err
	}
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	if s := suggest(ne.GetSpecifiedName(), names); s != "" {
		return usagef("%v (did you mean --%s?)", err, s)
	}
	return err
}

// methodHint adds "did you mean X?" for a mistyped method name.
func methodHint(name string, known []string) string {
	if s := suggest(name, known); s != "" {
		return " (did you mean " + s + "?)"
	}
	return ""
}
