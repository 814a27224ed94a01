#!/usr/bin/env bash
# Runs every fuzz target of the module (every "func FuzzX(" in a _test.go
# file, found anew each run so that new targets are picked up) for
# FUZZTIME each (default 60s), one after the other: go test -fuzz takes one
# target of one package per run. A crash fails the script, and go test
# leaves the failing input under testdata/fuzz/FuzzX/ in that package;
# commit it there to make it a regression test of the plain go test run.
#
#   bash .ci/fuzz.sh            # every target, 60 s each
#   FUZZTIME=10s bash .ci/fuzz.sh
#   FUZZTIME=10m FUZZPARALLEL=1 bash .ci/fuzz.sh   # the recorded one-hour run
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime="${FUZZTIME:-60s}"
# One worker per target leaves the other core to the rest of the machine;
# unset, go test uses every core.
parallel=()
if [[ -n "${FUZZPARALLEL:-}" ]]; then
	parallel=(-parallel "$FUZZPARALLEL")
fi

mapfile -t targets < <(
	git ls-files '*_test.go' |
		xargs grep -oE '^func Fuzz[A-Za-z0-9_]*\(' |
		sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#./\1 \2#; s#^[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#. \1#' |
		sort -u
)
if ((${#targets[@]} == 0)); then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "== fuzz $name in $pkg for $fuzztime"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "${parallel[@]}" "$pkg"
done
