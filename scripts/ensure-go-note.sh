#!/usr/bin/env bash
# Makes the Go toolchain and Debian's golang.org/x/mod sources available for the sumdb/note
# interoperability test (tests/interop/): installs golang-go and golang-golang-x-mod-dev as root
# on a machine that lacks them. The test builds offline from these packages (GOPATH mode).
set -euo pipefail
if command -v go >/dev/null 2>&1 && [ -f /usr/share/gocode/src/golang.org/x/mod/sumdb/note/note.go ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-go-note: Go or golang-golang-x-mod-dev is missing and this user cannot install them" >&2
    exit 1
fi
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    golang-go golang-golang-x-mod-dev >/dev/null
