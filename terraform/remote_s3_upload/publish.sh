#!/bin/sh
# Provisioner of terraform_data.publish in main.tf. Inputs come from the
# environment (see main.tf); nothing is interpolated into a command line.
set -eu

command -v jq >/dev/null 2>&1 || { echo "remote_s3_upload: jq is required" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM

# Sign what was planned: pack once into a file, compare its hash with the
# one the plan showed, then publish that very file. If the tree changed
# since the plan, stop; a new plan shows the new hash.
if [ "$NPCNIX_ALL_FILES" = "1" ]; then
  packed="$("$NPCNIX" pack --src "$NPCNIX_SRC" --out "$work/release.tar.zst" --json --all-files)"
else
  packed="$("$NPCNIX" pack --src "$NPCNIX_SRC" --out "$work/release.tar.zst" --json)"
fi
now="$(printf '%s' "$packed" | jq -r '.blake3')"
if [ "$now" != "$NPCNIX_EXPECTED_BLAKE3" ]; then
  echo "remote_s3_upload: $NPCNIX_SRC changed since plan (planned $NPCNIX_EXPECTED_BLAKE3, now $now); run terraform plan again" >&2
  exit 1
fi

set -- --remote "$NPCNIX_REMOTE" --key "$NPCNIX_KEY_FILE" --archive "$work/release.tar.zst"
if [ -n "$NPCNIX_REMOTE_REGION" ]; then set -- "$@" --remote-region "$NPCNIX_REMOTE_REGION"; fi
if [ -n "$NPCNIX_ENDPOINT" ]; then set -- "$@" --endpoint "$NPCNIX_ENDPOINT"; fi
if [ -n "$NPCNIX_EXPIRES" ]; then set -- "$@" --expires "$NPCNIX_EXPIRES"; fi
if [ -n "$NPCNIX_COMMENT" ]; then set -- "$@" --comment "$NPCNIX_COMMENT"; fi
# Provenance: the commit the tree was packed from, when the files packed are
# exactly that commit's (no uncommitted change to a tracked file). The lock
# hash is read from the archive by npcnix itself.
if [ "$NPCNIX_ALL_FILES" != "1" ] &&
  commit="$(git -C "$NPCNIX_SRC" rev-parse --verify -q HEAD 2>/dev/null)" &&
  git -C "$NPCNIX_SRC" diff --quiet HEAD -- 2>/dev/null; then
  set -- "$@" --git-commit "$commit"
else
  echo "remote_s3_upload: $NPCNIX_SRC is not a clean git checkout; the statement records no commit" >&2
fi

# Exit code 4: another publisher took the version first; nothing visible to
# hosts changed, so publishing again (as the next version) is safe.
attempt=1
while :; do
  status=0
  "$NPCNIX" publish "$@" || status=$?
  if [ "$status" -eq 0 ]; then
    exit 0
  fi
  if [ "$status" -ne 4 ] || [ "$attempt" -ge 5 ]; then
    exit "$status"
  fi
  echo "remote_s3_upload: another publisher took the version (attempt $attempt); retrying" >&2
  attempt=$((attempt + 1))
  sleep "$attempt"
done
