#!/usr/bin/env bash
# The main job on the embedded default (SQLite store, software keys): create a node, store a few
# artifacts, read them back. Set-up (virtual environment, dependencies) happens first, on its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/bootstrap.sh
oblivio=("$root/.venv/bin/oblivio")

work=$(mktemp -d "${TMPDIR:-/tmp}/oblivio-demo.XXXXXX")
export OBLIVIO_HOME="$work/home"
echo "== oblivio init (home: $OBLIVIO_HOME)"
"${oblivio[@]}" init --name demo.oblivio.example

echo "== oblivio put: three artifacts about user:alice"
printf 'Alice lives at 1 Example Street\n' > "$work/address.txt"
printf 'Alice prefers tea\n' > "$work/preference.txt"
id_address=$("${oblivio[@]}" put "$work/address.txt" --entity user:alice --scope team --meta '{"kind":"address"}')
id_pref=$("${oblivio[@]}" put "$work/preference.txt" --entity user:alice --meta '{"kind":"preference"}')
id_stdin=$(printf 'a note from standard input\n' | "${oblivio[@]}" put - --meta '{"kind":"note"}')
printf '%s\n' "$id_address" "$id_pref" "$id_stdin"

echo "== oblivio get: each reads back exactly"
for id in "$id_address" "$id_pref" "$id_stdin"; do
    printf '%s… ' "${id:0:12}"
    "${oblivio[@]}" get "$id"
done
"${oblivio[@]}" get "$id_address" -o "$work/address.out"
cmp "$work/address.txt" "$work/address.out" && echo "byte-identical round trip: ok"

echo "== oblivio key: the node's verifier key (C2SP signed-note format)"
"${oblivio[@]}" key

echo "== an unknown id is a clear error"
if "${oblivio[@]}" get 0000000000000000000000000000000000000000000000000000000000000000; then
    echo "expected an error" >&2
    exit 1
fi
echo "demo finished; node left in $OBLIVIO_HOME"
