#!/usr/bin/env bash
# Installs what ecprune's tests need beyond Go, on Debian 12 as root (or with
# sudo). Developers and CI (.ci/run) use this same script. It only installs
# what is missing, so running it again is quick.
#
#   Debian packages: python3-onnx, python3-numpy (the reference checker, for
#     /usr/bin/python3), libonnx-testdata (ONNX backend node tests),
#     protobuf-compiler (onnxio/onnxpb/gen.sh), libopenblas-dev, gcc and
#     libc6-dev (cgo), git, ca-certificates, and npm when there is none.
#   npm: onnxruntime-node@$ORT_VERSION into .ci/ort (with --ignore-scripts:
#     only its bundled libonnxruntime.so is used, by testmodels/ort).
#
# Afterwards: export ECPRUNE_ORT_LIB="$(scripts/setup-deps.sh --print-ort-lib)"
# (testmodels/ort also finds the library in .ci/ort on its own).
set -euo pipefail

ORT_VERSION=1.30.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ort_prefix="$root/.ci/ort"
ort_lib="$ort_prefix/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1"

if [[ "${1:-}" == "--print-ort-lib" ]]; then
	echo "$ort_lib"
	exit 0
fi

log() { echo "setup-deps: $*"; }

as_root() {
	if [[ "$(id -u)" == 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		log "need root (or sudo) to run: $*" >&2
		exit 1
	fi
}

# Runs a command with its output in a log that is shown only on failure.
quietly() {
	local out
	out=$(mktemp)
	if ! "$@" >"$out" 2>&1; then
		tail -n 40 "$out" >&2
		rm -f "$out"
		log "failed: $*" >&2
		exit 1
	fi
	rm -f "$out"
}

# --- Debian packages ---
pkgs=(python3-onnx python3-numpy libonnx-testdata protobuf-compiler libopenblas-dev gcc libc6-dev git ca-certificates)
command -v npm >/dev/null || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	log "apt-get install ${missing[*]}"
	quietly as_root apt-get update -q
	quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
	log "Debian packages present: ${pkgs[*]}"
fi

# --- ONNX Runtime (npm onnxruntime-node) ---
have=""
if [[ -f "$ort_lib" ]]; then
	have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$ort_prefix/node_modules/onnxruntime-node/package.json" | head -n 1)
fi
if [[ "$have" == "$ORT_VERSION" ]]; then
	log "onnxruntime-node@$ORT_VERSION present in .ci/ort"
else
	log "npm install onnxruntime-node@$ORT_VERSION into .ci/ort${have:+ (replacing $have)}"
	mkdir -p "$ort_prefix"
	quietly npm install --prefix "$ort_prefix" --ignore-scripts --no-save --no-audit --no-fund \
		"onnxruntime-node@$ORT_VERSION"
	if [[ ! -f "$ort_lib" ]]; then
		log "npm install gave no $ort_lib" >&2
		exit 1
	fi
fi
log "ONNX Runtime library: $ort_lib"
