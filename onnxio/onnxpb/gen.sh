#!/bin/sh
# Regenerates onnx.pb.go from onnx.proto. Needs protoc (Debian
# protobuf-compiler); protoc-gen-go is built from the version pinned in go.mod.
set -eu
cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
protoc --plugin=protoc-gen-go="$bin/protoc-gen-go" --go_out=. --go_opt=paths=source_relative onnx.proto
