#!/usr/bin/env bash
# The main job on the embedded default (SQLite store, software keys): store a few artifacts,
# forget one at level 2, prove it, verify the proof offline, and show that reading it fails.
# Set-up (virtual environment, dependencies) happens first, on its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/bootstrap.sh
oblivio=("$root/.venv/bin/oblivio")
start=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/oblivio-demo.XXXXXX")
export OBLIVIO_HOME="$work/home"
echo "== oblivio init (home: $OBLIVIO_HOME)"
"${oblivio[@]}" init --name demo.oblivio.example

echo "== oblivio put: three artifacts"
printf 'Alice lives at 1 Example Street\n' > "$work/address.txt"
id_address=$("${oblivio[@]}" put "$work/address.txt" --entity user:alice --scope team --meta '{"kind":"address"}')
id_pref=$(printf 'Alice prefers tea\n' | "${oblivio[@]}" put - --entity user:alice --meta '{"kind":"preference"}')
id_note=$(printf 'a note about nobody\n' | "${oblivio[@]}" put - --meta '{"kind":"note"}')
printf '%s\n' "$id_address" "$id_pref" "$id_note"
"${oblivio[@]}" get "$id_address" -o "$work/address.out"
cmp "$work/address.txt" "$work/address.out" && echo "round trip of $id_address: byte-identical"

echo "== oblivio forget --level 2: Alice's address"
"${oblivio[@]}" forget "$id_address" --level 2 --authority GDPR-Art17 \
    --requestor alice@example.com --reason "erasure request #2026-042"

echo "== oblivio get: reading it now fails, and says why"
set +e
"${oblivio[@]}" get "$id_address"
status=$?
set -e
if [ "$status" != 7 ]; then
    echo "expected exit status 7 (forgotten), got $status" >&2
    exit 1
fi
echo "(exit status 7: forgotten)"
echo "the other artifacts still read:"
"${oblivio[@]}" get "$id_pref"
"${oblivio[@]}" get "$id_note"

echo "== oblivio prove: the Proof of Forgetting"
"${oblivio[@]}" prove "$id_address" -o "$work/proof.json"
echo "wrote $work/proof.json ($(wc -c < "$work/proof.json") bytes)"

echo "== oblivio verify: offline, with nothing but the proof and the node's verifier key"
vkey=$("${oblivio[@]}" key)
echo "verifier key: $vkey"
"${oblivio[@]}" verify "$work/proof.json" --key "$vkey"

echo "== a tampered proof names the link that fails"
sed 's/"level": 2/"level": 1/' "$work/proof.json" > "$work/tampered.json"
set +e
"${oblivio[@]}" verify "$work/tampered.json" --key "$vkey"
status=$?
set -e
if [ "$status" != 8 ]; then
    echo "expected exit status 8 (proof invalid), got $status" >&2
    exit 1
fi

echo "== the latest signed checkpoint (C2SP tlog-checkpoint)"
"${oblivio[@]}" checkpoint
echo "demo finished in $(( $(date +%s) - start )) s; node left in $OBLIVIO_HOME"
