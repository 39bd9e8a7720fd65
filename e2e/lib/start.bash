# `start` of e2e/control-plane.sh (sourced by it): free ports, then etcd, kube-apiserver and
# kube-controller-manager launched detached and waited for, retried on a lost port race; the node follows with --node.
# shellcheck shell=bash disable=SC2317 # functions passed to wait_for look unreachable to shellcheck

# N distinct loopback ports that nothing uses, below the kernel's ephemeral range so outgoing connections
# do not take them between this check and the bind; a lost race shows up as "address already in use" and is retried.
free_ports() {
  local n=$1 low used=" " port address
  local -a picked=()
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  ((low > 11024)) || low=32768
  # Every local port of every TCP socket (hex "ADDR:PORT" in column 2), listening or not.
  while read -r _ address _; do
    [[ $address == *:* ]] && used+="$((16#${address##*:})) "
  done < <(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  while ((${#picked[@]} < n)); do
    port=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000)))
    [[ $used == *" $port "* ]] && continue
    used+="$port "
    picked+=("$port")
  done
  printf '%s\n' "${picked[*]}"
}

# --- PKI (openssl) ---

declare -A PIDS=()

launch() { # name command...: detached from the caller's session and stdio, output to DIR/name.log
  local name=$1
  shift
  setsid "$@" </dev/null >"$DIR/$name.log" 2>&1 &
  PIDS[$name]=$!
  printf '%s %s\n' "$name" "$!" >>"$DIR/pids"
}

etcd_healthy() {
  local out
  # shellcheck disable=SC2016 # expanded by the inner bash
  out=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET /health HTTP/1.0\r\n\r\n" >&3 && cat <&3' \
    _ "$1" 2>/dev/null) || return 1
  [[ $out == *'"health":"true"'* ]]
}

kubectl_ok() { # its discovery cache stays in DIR rather than ~/.kube
  "$BIN_DIR/kubectl" --kubeconfig "$DIR/kubeconfig" --cache-dir "$DIR/.kube-cache" --request-timeout=5s "$@" \
    >/dev/null 2>&1
}

FAILED_COMPONENT=
wait_for() { # component what check...
  local component=$1 what=$2 deadline=$((SECONDS + START_TIMEOUT))
  shift 2
  until "$@"; do
    if ! alive "${PIDS[$component]}"; then
      FAILED_COMPONENT=$component
      log "$component exited while waiting for: $what"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      FAILED_COMPONENT=$component
      log "timed out after ${START_TIMEOUT}s waiting for: $what"
      return 1
    fi
    sleep 0.2
  done
}

start_components() {
  local etcd_port etcd_peer_port apiserver_port kcm_port pki=$DIR/pki
  read -r etcd_port etcd_peer_port apiserver_port kcm_port < <(free_ports 4)

  local -a etcd_args=(
    --name=ferry --data-dir="$DIR/etcd"
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port"
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port"
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port"
    --initial-cluster="ferry=http://127.0.0.1:$etcd_peer_port"
    # Throwaway data: durability buys nothing here and fsync costs seconds.
    --unsafe-no-fsync
  )
  launch etcd "$BIN_DIR/etcd" "${etcd_args[@]}"
  wait_for etcd "etcd health on 127.0.0.1:$etcd_port" etcd_healthy "$etcd_port" || return 1

  # With a node, the API server listens on the node address, where pods reach it too.
  local address=127.0.0.1
  if $NODE_MODE; then address=$NODE_IP; fi
  APISERVER_URL=https://$address:$apiserver_port
  write_kubeconfig "$DIR/kubeconfig" "$APISERVER_URL" "$pki" admin
  write_kubeconfig "$DIR/controller-manager.kubeconfig" "$APISERVER_URL" "$pki" controller-manager

  # shellcheck disable=SC2054 # commas inside flag values
  local -a apiserver_args=(
    --etcd-servers="http://127.0.0.1:$etcd_port"
    --bind-address="$address" --advertise-address="$address" --secure-port="$apiserver_port"
    --cert-dir="$DIR/kube-apiserver"
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key"
    --client-ca-file="$pki/ca.crt"
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group
    --requestheader-extra-headers-prefix=X-Remote-Extra-
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key"
    # Enforced for every identity but system:masters, so tests can check least-privilege RBAC; kubelets are
    # limited to their own node and its pods.
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key"
    # Room for thousands of Services (the controller benchmark makes one per ModelDeployment). Without a node
    # it is only an allocator range; with one, kube-proxy routes it on this machine only.
    --service-cluster-ip-range="$SERVICE_CIDR"
    --allow-privileged=true
  )
  if $NODE_MODE; then
    apiserver_args+=(
      --endpoint-reconciler-type=lease
      --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt"
      --kubelet-client-key="$pki/apiserver-kubelet-client.key"
      --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP
    )
  else
    # Endpoints of the `kubernetes` Service may not be loopback addresses, and nothing in-cluster needs them.
    apiserver_args+=(--endpoint-reconciler-type=none)
  fi
  launch kube-apiserver "$BIN_DIR/kube-apiserver" "${apiserver_args[@]}"
  wait_for kube-apiserver "kube-apiserver /readyz on 127.0.0.1:$apiserver_port" kubectl_ok get --raw /readyz || return 1

  local -a kcm_args=(
    --kubeconfig="$DIR/controller-manager.kubeconfig"
    --authentication-kubeconfig="$DIR/controller-manager.kubeconfig"
    --authorization-kubeconfig="$DIR/controller-manager.kubeconfig"
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$DIR/kube-controller-manager"
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt"
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key"
    # Each controller acts as its own service account, as in a real cluster (RBAC denials show up in tests).
    --use-service-account-credentials=true
    --controllers='*'
    --leader-elect=false
  )
  launch kube-controller-manager "$BIN_DIR/kube-controller-manager" "${kcm_args[@]}"
  wait_for kube-apiserver "namespace default" kubectl_ok get namespace default || return 1
  # The serviceaccount controller creates it: proves kube-controller-manager runs.
  wait_for kube-controller-manager "serviceaccount default/default" kubectl_ok -n default get serviceaccount default ||
    return 1
}

# Stops the components of a failed attempt and clears DIR for the next one (the PKI and watchdog stay).
reset_attempt() {
  stop_processes "$DIR" keep-watchdog
  grep '^watchdog ' "$DIR/pids" >"$DIR/pids.keep" || true
  mv "$DIR/pids.keep" "$DIR/pids"
  rm -rf "$DIR/etcd" "$DIR"/*.log "$DIR/kube-apiserver" "$DIR/kube-controller-manager"
  PIDS=()
}

cmd_start() {
  local dir="" watch_pid="" t0=$EPOCHREALTIME attempt started
  while [[ $# -gt 0 ]]; do
    case $1 in
    --dir) dir=${2:?--dir needs a value} && shift 2 ;;
    --watch-pid) watch_pid=${2:?--watch-pid needs a value} && shift 2 ;;
    --node) NODE_MODE=true && shift ;;
    *) die "usage: $0 start [--node] [--dir DIR] [--watch-pid PID]" ;;
    esac
  done
  require_installed
  if $NODE_MODE; then node_preflight; fi
  command -v openssl >/dev/null || die "openssl is required (apt-get install openssl)"
  if [[ -n $watch_pid ]]; then
    started=$(start_time "$watch_pid") || die "--watch-pid $watch_pid: no such process"
  fi

  if [[ -z $dir ]]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-control-plane.XXXXXX")
  else
    mkdir -p "$dir"
    [[ -z $(ls -A "$dir") ]] || die "$dir is not empty"
  fi
  DIR=$(realpath "$dir")
  : >"$DIR/$MARKER"
  : >"$DIR/pids"
  # Until start succeeds, any exit stops what was started and removes DIR.
  trap 'stop_dir "$DIR"' EXIT
  trap 'exit 130' INT TERM

  if [[ -n $watch_pid ]]; then
    setsid bash "$SCRIPT" __watchdog "$DIR" "$watch_pid" "$started" </dev/null >"$DIR/watchdog.log" 2>&1 &
    printf 'watchdog %s\n' "$!" >>"$DIR/pids"
  fi

  log "starting control plane in $DIR"
  if $NODE_MODE; then node_host_setup; fi
  make_pki "$DIR/pki"
  for attempt in 1 2 3; do
    FAILED_COMPONENT=
    start_components && break
    # Another process took a port between the check and the bind: retry with new ports.
    if ((attempt < 3)) && grep -qs 'address already in use' "$DIR"/*.log; then
      log "port conflict; retrying with new ports"
      reset_attempt
      continue
    fi
    if [[ -n $FAILED_COMPONENT ]]; then
      log "last lines of $DIR/$FAILED_COMPONENT.log:"
      tail -n 40 "$DIR/$FAILED_COMPONENT.log" >&2 || true
    fi
    die "control plane did not start"
  done
  if $NODE_MODE; then
    log "starting the node $NODE_NAME ($NODE_IP)"
    if ! start_node "$APISERVER_URL"; then
      [[ -n $FAILED_COMPONENT ]] && tail -n 40 "$DIR/$FAILED_COMPONENT.log" >&2
      die "the node did not start"
    fi
  fi

  {
    printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
    # shellcheck disable=SC2016 # $PATH is expanded when the file is sourced
    printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
    printf 'export FERRY_CONTROL_PLANE_DIR=%q\n' "$DIR"
    if $NODE_MODE; then
      printf 'export CONTAINERD_ADDRESS=%q\n' "$DIR/containerd.sock"
      printf 'export FERRY_NODE_IP=%q\n' "$NODE_IP"
    fi
  } >"$DIR/env"
  trap - EXIT INT TERM
  log "ready in $(elapsed "$t0"): $(grep -o 'https://[^ ]*' "$DIR/kubeconfig")"
  log "use it with: source $DIR/env; stop it with: bash e2e/control-plane.sh stop $DIR"
  printf '%s\n' "$DIR"
}
