# oha, the HTTP load generator of the benchmarks (e2e/bench-strategies.sh, server-image/benches/run.sh), at one
# version for both.
# shellcheck shell=bash

OHA_VERSION=1.16.0

ensure_oha() { # cache-dir: installs oha under cache-dir/tools when missing or of another version; prints its path
  local tools=$1/tools
  if ! "$tools/bin/oha" --version 2>/dev/null | grep -q "$OHA_VERSION"; then
    printf 'installing oha %s into %s (cargo install, a few minutes once)\n' "$OHA_VERSION" "$tools" >&2
    cargo install --quiet --locked --root "$tools" "oha@$OHA_VERSION" >&2
  fi
  printf '%s\n' "$tools/bin/oha"
}
