#!/usr/bin/env bash
# Local Kubernetes for Ferry's tests and demo: etcd + kube-apiserver + kube-controller-manager, plus kubectl and
# helm, all built from the Go module proxy at pinned versions; with --node also a real node (kube-scheduler,
# containerd + runc, the kubelet, kube-proxy, CNI bridge networking; e2e/lib/node.bash), which needs root.
#
#   install [--node]                           build the binaries into a versioned cache (seconds when built)
#   start [--node] [--dir DIR] [--watch-pid PID] start a cluster; prints DIR as the last stdout line
#   stop DIR                                   stop exactly what `start` started and remove DIR
#   load DIR ARCHIVE...                        import OCI image archives into the node's containerd
#   env                                        print `export PATH=...` for the installed binaries
#   bin-dir                                    print the directory holding the installed binaries
#
# DIR holds: kubeconfig (admin, system:masters), env (sourceable: KUBECONFIG and PATH), pids ("name pid" lines),
# the logs etcd.log, kube-apiserver.log, kube-controller-manager.log (and watchdog.log), pki/, etcd/ (data) and
# controller-manager.kubeconfig. Environment: FERRY_CACHE_DIR (default ~/.cache/ferry) holds the binaries;
# FERRY_CONTROL_PLANE_TIMEOUT (default 60) is the seconds each component gets to become ready.
set -euo pipefail
export LC_ALL=C # keeps $EPOCHREALTIME and tool output parseable

SCRIPT=$(realpath "${BASH_SOURCE[0]}")
LIB=$(dirname "$SCRIPT")/lib

# One job per file: versions, paths and logging; Debian packages; install; process supervision (stop, watchdog);
# PKI; start; the node.
# Sourcing reads each file whole, so a file changed while a control plane runs affects only later commands.
# shellcheck source=e2e/lib/common.bash
source "$LIB/common.bash"
# shellcheck source=e2e/lib/debian.bash
source "$LIB/debian.bash"
# shellcheck source=e2e/lib/install.bash
source "$LIB/install.bash"
# shellcheck source=e2e/lib/supervise.bash
source "$LIB/supervise.bash"
# shellcheck source=e2e/lib/pki.bash
source "$LIB/pki.bash"
# shellcheck source=e2e/lib/start.bash
source "$LIB/start.bash"
NODE_MODE=false
# shellcheck source=e2e/lib/node.bash
source "$LIB/node.bash"

usage() {
  # The header comment of this file is the usage text.
  awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "$SCRIPT" >&2
  exit 2
}

main() {
  case ${1:-} in
  install) shift && cmd_install "$@" ;;
  start) shift && cmd_start "$@" ;;
  stop) shift && cmd_stop "$@" ;;
  load) shift && cmd_load "$@" ;;
  env) shift && cmd_env "$@" ;;
  bin-dir) shift && cmd_bin_dir "$@" ;;
  __watchdog) shift && cmd_watchdog "$@" ;;
  *) usage ;;
  esac
}

# One line, so bash never reads further from this file after main returns (safe if the file changes meanwhile).
main "$@"; exit "$?"
