#!/bin/sh
# Program of the `external` data source in main.tf.
#
# Reads the query {"npcnix": ..., "src": ..., "all_files": "0"|"1"} as JSON on
# stdin, runs `npcnix pack --src SRC --hash-only --json` and prints
# {"blake3": "<hex>", "size": "<bytes>"}: the external data source only
# accepts string values, while npcnix prints size as a number (and more
# fields).
set -eu

command -v jq >/dev/null 2>&1 || { echo "remote_s3_upload: jq is required" >&2; exit 1; }

query="$(cat)"
npcnix="$(printf '%s' "$query" | jq -r '.npcnix')"
src="$(printf '%s' "$query" | jq -r '.src')"
all_files="$(printf '%s' "$query" | jq -r '.all_files // "0"')"

if [ "$all_files" = "1" ]; then
  out="$("$npcnix" pack --src "$src" --hash-only --json --all-files)"
else
  out="$("$npcnix" pack --src "$src" --hash-only --json)"
fi

printf '%s' "$out" | jq -c '
  if (.blake3 | type) != "string" or (.blake3 | test("^[0-9a-f]{64}$") | not)
  then error("npcnix pack: unexpected blake3 in output") else . end
  | {blake3: .blake3, size: (.size | tostring)}'
