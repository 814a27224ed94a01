#!/usr/bin/env bash
# Runs every fuzz target of the loaders for FUZZTIME each (default 60s):
# the model with external data, .npy/.npz/.pb data files and labels, the
# .npy header. A crash writes its input under the package's
# testdata/fuzz/ (commit it as a regression test) and fails the script.
#
#   .ci/fuzz.sh [FUZZTIME]     e.g. .ci/fuzz.sh 10m
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${1:-${FUZZTIME:-60s}}
targets=(
	./onnxio:FuzzLoad
	./onnxio:FuzzLoadExternal
	./analysis/calib:FuzzNpyHeader
	./analysis/calib:FuzzNpyFile
	./analysis/calib:FuzzNpzFile
	./analysis/calib:FuzzPbFile
)
for t in "${targets[@]}"; do
	pkg=${t%%:*} name=${t#*:}
	echo "fuzz.sh: $name ($pkg) for $fuzztime" >&2
	go test "$pkg" -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime"
done
