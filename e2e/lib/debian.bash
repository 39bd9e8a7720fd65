# Debian packages a script needs, installed when missing (sourced by e2e/control-plane.sh and e2e/cluster.sh,
# which provide log and die).
# shellcheck shell=bash

debian_packages_missing() { # package...: prints the missing ones
  local p
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || printf '%s ' "$p"
  done
}

ensure_debian_packages() { # who package...: installs the missing ones as root, else fails naming them
  local who=$1 missing
  shift
  missing=$(debian_packages_missing "$@")
  [[ -z $missing ]] && return
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "$who needs Debian's packages: apt-get install $missing"
  fi
  log "installing $missing..."
  # shellcheck disable=SC2086 # a list of package names
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }
}
