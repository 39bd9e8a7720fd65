# Process supervision of e2e/control-plane.sh (sourced by it): which pids are ours, signalling their process
# groups, `stop` and the watchdog that stops a control plane once the process it watches is gone.
# shellcheck shell=bash

# Fields of /proc/PID/stat after the command name, into the array named $2: [0]=state [2]=pgrp [19]=starttime.
proc_stat() {
  local -n fields=$2
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  # shellcheck disable=SC2034 # a nameref: fills the caller's array
  read -ra fields <<<"${line##*) }"
}

alive() { # running and not a zombie
  local -a f
  proc_stat "$1" f && [[ ${f[0]} != Z ]]
}

start_time() {
  local -a f
  proc_stat "$1" f && printf '%s' "${f[19]}"
}

# A pid from DIR/pids still belongs to this control plane (not a reused pid): alive, and its command line has
# a path under DIR (the components) or DIR itself as an argument (the watchdog).
ours() {
  local pid=$1 dir=$2 cmdline
  alive "$pid" || return 1
  cmdline=" $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ $cmdline == *"$dir/"* || $cmdline == *" $dir "* ]]
}

# Every component runs in its own session (setsid), so signalling its process group reaches it and any children.
signal() {
  local sig=$1 pid=$2
  local -a f
  proc_stat "$pid" f || return 0
  if [[ ${f[2]} == "$pid" ]]; then
    kill -s "$sig" -- "-$pid" 2>/dev/null || true
  else
    kill -s "$sig" "$pid" 2>/dev/null || true
  fi
}

wait_gone() { # timeout pid...
  local deadline=$((SECONDS + $1)) pid left
  shift
  while :; do
    left=0
    for pid in "$@"; do alive "$pid" && left=1; done
    ((left)) || return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# The watchdog first (so it cannot start a second stop), then the components in reverse start order:
# kube-apiserver shuts down in about a second while etcd still runs, but takes several without it.
stop_processes() { # dir [keep-watchdog]
  local dir=$1 keep_watchdog=${2:-} name pid i
  local -a names=() pids=() order=()
  [[ -f $dir/pids ]] || return 0
  while read -r name pid; do
    names+=("$name")
    pids+=("$pid")
  done <"$dir/pids"
  for i in "${!names[@]}"; do
    [[ ${names[i]} == watchdog && -z $keep_watchdog ]] && order+=("${pids[i]}")
  done
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    [[ ${names[i]} == watchdog ]] || order+=("${pids[i]}")
  done
  for pid in "${order[@]}"; do
    [[ $pid == "$$" ]] && continue # the watchdog stopping its own control plane
    ours "$pid" "$dir" || continue
    signal TERM "$pid"
    wait_gone 5 "$pid" && continue
    signal KILL "$pid"
    wait_gone 5 "$pid" || log "warning: process $pid of $dir did not exit"
  done
}

stop_dir() {
  local dir=$1
  [[ -f $dir/$MARKER ]] || die "$dir is not a control-plane directory (no $MARKER)"
  if [[ -f $dir/node ]]; then
    stop_node "$dir"
  else
    stop_processes "$dir"
  fi
  rm -rf "$dir"
}

cmd_stop() {
  [[ $# -eq 1 ]] || die "usage: $0 stop DIR"
  if [[ ! -d $1 ]]; then
    log "nothing to stop: $1 does not exist"
    return
  fi
  stop_dir "$(realpath "$1")"
  log "stopped and removed $1"
}

# Stops the control plane once the watched process is gone (same pid with a different start time = gone).
cmd_watchdog() {
  local dir=$1 pid=$2 started=$3
  while [[ -d $dir ]] && [[ $(start_time "$pid" 2>/dev/null) == "$started" ]]; do sleep 1; done
  if [[ -d $dir ]]; then
    log "process $pid is gone; stopping $dir"
    stop_dir "$dir"
  fi
}
