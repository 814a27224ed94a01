package ecprune

import (
	"fmt"
	"testing"
)

func TestScoresEntryNames(t *testing.T) {
	got := entryNames([]string{"../../etc/x.importance", "a\\b", "..", "ok.delta", "a_b"})
	want := []string{".._.._etc_x.importance", "a_b", "_..", "ok.delta", "a_b_2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entry names %q, want %q", got, want)
	}
}
