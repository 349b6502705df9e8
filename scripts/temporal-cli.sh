#!/usr/bin/env bash
# Provides the Temporal CLI (dev server), pinned to v1.5.1, and prints its path on stdout.
# Order: `temporal` on PATH, then $TEMPORAL_CLI, then the cached build, and only then a build.
# Progress goes to stderr so callers can do: TEMPORAL=$(scripts/temporal-cli.sh)
set -euo pipefail

VERSION="v1.5.1"
CACHE_DIR="${ROUTEDESK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/routedesk}"
CACHED="$CACHE_DIR/temporal-$VERSION/temporal"

say() { echo "temporal-cli: $*" >&2; }

if command -v temporal >/dev/null 2>&1; then
  command -v temporal
  exit 0
fi
if [ -n "${TEMPORAL_CLI:-}" ]; then
  if [ -x "$TEMPORAL_CLI" ]; then echo "$TEMPORAL_CLI"; exit 0; fi
  say "TEMPORAL_CLI=$TEMPORAL_CLI is not an executable file"; exit 1
fi
if [ -x "$CACHED" ]; then
  echo "$CACHED"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  say "no Temporal CLI found and Go is not installed, so it cannot be built."
  say "Either install the Temporal CLI by hand (https://docs.temporal.io/cli) and put 'temporal' on PATH,"
  say "or set TEMPORAL_CLI=/path/to/temporal, or install Go >= 1.23 and run this again."
  exit 1
fi

# The checksum database may be unreachable from here even though the module proxy is.
# If so, skip it deliberately: the CLI module's own go.sum still pins every dependency's hash,
# so only the CLI module's own zip goes unchecked against the checksum database.
sumdb="$(go env GOSUMDB)"
say "GOPROXY=$(go env GOPROXY) GOSUMDB=$sumdb"
if [ "$sumdb" != "off" ]; then
  sumhost="${sumdb%% *}"; sumhost="${sumhost##*+}"
  if ! curl -fsS -m 10 -o /dev/null "https://$sumhost/latest" 2>/dev/null; then
    say "checksum database $sumhost is not reachable: building with GOSUMDB=off"
    say "(dependencies stay pinned by the go.sum of temporalio/cli $VERSION)"
    export GOSUMDB=off
  fi
fi

mkdir -p "$(dirname "$CACHED")"
tmp_bin="$(mktemp -d)"
log="$CACHE_DIR/build-$VERSION.log"
say "building temporalio/cli $VERSION into $CACHE_DIR (first time only; about 3-5 minutes)"
start=$(date +%s)
CGO_ENABLED=0 GOBIN="$tmp_bin" go install "github.com/temporalio/cli/cmd/temporal@$VERSION" >"$log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  sleep 15
  kill -0 "$pid" 2>/dev/null && say "  still building ($(( $(date +%s) - start ))s, $(grep -c 'downloading' "$log" || true) modules fetched)"
done
if ! wait "$pid" || [ ! -x "$tmp_bin/temporal" ]; then
  tail -20 "$log" >&2
  say "build failed (full log: $log)."
  say "Install the Temporal CLI by hand and put it on PATH, or set TEMPORAL_CLI=/path/to/temporal."
  exit 1
fi
mv "$tmp_bin/temporal" "$CACHED"
rmdir "$tmp_bin" 2>/dev/null || true
say "built in $(( $(date +%s) - start ))s: $CACHED"
echo "$CACHED"
