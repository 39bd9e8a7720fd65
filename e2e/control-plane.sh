#!/usr/bin/env bash
# Local Kubernetes for Ferry's tests and demo: etcd + kube-apiserver + kube-controller-manager, plus kubectl and
# helm, all built from the Go module proxy at pinned versions; with --node also a real node (kube-scheduler,
# containerd + runc, the kubelet, kube-proxy, CNI bridge networking; e2e/node.bash), which needs root.
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
# shellcheck disable=SC2317 # functions passed to timed_build and wait_for look unreachable to shellcheck
set -euo pipefail
export LC_ALL=C # keeps $EPOCHREALTIME and tool output parseable

# --- Pinned versions ----------------------------------------------------------------------------------------------
# The Kubernetes minor must match the k8s-openapi feature the Rust code compiles against (v1_36).
K8S_VERSION=v1.36.3
# etcd version Kubernetes 1.36 is tested with (its build/dependencies.yaml and kubeadm's DefaultEtcdVersion).
ETCD_VERSION=v3.6.8
HELM_MODULE=helm.sh/helm/v4
HELM_VERSION=v4.3.1

CACHE_ROOT=${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/control-plane
INSTALL_DIR=$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION
BIN_DIR=$INSTALL_DIR/bin
STAMP=$INSTALL_DIR/installed # written last: its presence means the install is complete
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl helm)
INSTALL_HINT="bash e2e/control-plane.sh install"
SERVICE_CIDR=10.0.0.0/16 # its first address, 10.0.0.1, is the kubernetes Service (in the API server's certificate)
START_TIMEOUT=${FERRY_CONTROL_PLANE_TIMEOUT:-60} # seconds each component gets to become ready
MARKER=.ferry-control-plane                       # marks a directory `stop` may delete
SCRIPT=$(realpath "${BASH_SOURCE[0]}")

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
elapsed() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", e - s }'; }

# --- install ------------------------------------------------------------------------------------------------------

installed() {
  [[ -f $STAMP ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x $BIN_DIR/$b ]] || return 1; done
}

require_installed() {
  installed || die "control-plane binaries are not installed in $BIN_DIR; run: $INSTALL_HINT"
}

# Every binary must run and report its pinned version (catches truncated or foreign binaries).
check_versions() {
  local dir=$1 out
  out=$("$dir/etcd" --version 2>&1) || return 1
  [[ $out == *"etcd Version: ${ETCD_VERSION#v}"* ]] || return 1
  out=$("$dir/kube-apiserver" --version 2>&1) || return 1
  [[ $out == "Kubernetes $K8S_VERSION" ]] || return 1
  out=$("$dir/kube-controller-manager" --version 2>&1) || return 1
  [[ $out == "Kubernetes $K8S_VERSION" ]] || return 1
  out=$("$dir/kubectl" version --client -o json 2>&1) || return 1
  [[ $out == *"\"gitVersion\": \"$K8S_VERSION\""* ]] || return 1
  out=$("$dir/helm" version --short 2>&1) || return 1
  [[ $out == "$HELM_VERSION"* ]] || return 1
}

# Modules an upstream go.mod replaces with a path inside its own repository (`M => ./x` or `M => ../x`).
# Those replaces are ignored once the module is a dependency, so the wrapper must pin them to published versions.
relative_replaces() {
  awk '
    /^replace[ \t]*\(/ { block = 1; next }
    block && /^\)/ { block = 0; next }
    {
      line = $0
      if (block) line = "replace " line
      if (line !~ /^replace[ \t]/) next
      n = split(line, f, /[ \t]+/)
      for (i = 1; i <= n; i++) if (f[i] == "=>") break
      if (i < n && f[i + 1] ~ /^\.\.?\// && f[i + 1] !~ /FORBIDDEN/) print f[2]
    }' "$1"
}

# A throwaway main module that requires DEP and pins its in-repo replaces to REPLACE_VERSION.
write_wrapper() {
  local dir=$1 name=$2 dep=$3 dep_version=$4 replace_version=$5 upstream_gomod=$6 m
  mkdir -p "$dir"
  {
    printf 'module ferry-build/%s\n\n' "$name"
    # Same language version and GODEBUG defaults as upstream builds with.
    awk '/^go[ \t]/ { print } /^godebug[ \t]*\(/ { b = 1 } b || /^godebug[ \t]/ { print } b && /^\)/ { b = 0 }' \
      "$upstream_gomod"
    printf '\nrequire %s %s\n\nreplace (\n' "$dep" "$dep_version"
    while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$replace_version"; done < <(relative_replaces "$upstream_gomod")
    printf ')\n'
  } >"$dir/go.mod"
}

upstream_gomod() { # module@version -> path of its go.mod in the module cache
  go mod download -json "$1" | awk -F'"' '$2 == "GoMod" { print $4 }'
}

# Release date of a module version, from the proxy's .info; used as a reproducible build date.
module_time() {
  go list -m -json "$1" | awk -F'"' '$2 == "Time" { print $4 }'
}

timed_build() { # label command...
  local label=$1 t0=$EPOCHREALTIME
  shift
  log "building $label ..."
  "$@"
  log "built $label in $(elapsed "$t0")"
}

build_etcd() {
  local work=$1 out=$2 gomod
  gomod=$(upstream_gomod "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  write_wrapper "$work/etcd" etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "$gomod"
  # No git checkout here, so the tag stands in for the commit etcd reports.
  go -C "$work/etcd" build -mod=mod -trimpath \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
    -o "$out/etcd" go.etcd.io/etcd/server/v3
}

kubernetes_ldflags() {
  local minor=${K8S_VERSION#v1.} date kv key val pkg flags=(-s -w)
  minor=${minor%%.*}
  date=$(module_time "k8s.io/kubernetes@$K8S_VERSION")
  # Built from the released module rather than a git tree: the module version stands in for the commit.
  for kv in "gitVersion=$K8S_VERSION" gitMajor=1 "gitMinor=$minor" "gitCommit=k8s.io/kubernetes@$K8S_VERSION" \
    gitTreeState=clean "buildDate=$date"; do
    key=${kv%%=*} val=${kv#*=}
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      flags+=("-X '$pkg.$key=$val'")
    done
  done
  printf '%s' "${flags[*]}"
}

build_kubernetes() { # work out binary...
  local work=$1 out=$2 gomod staging_version ldflags bin
  shift 2
  gomod=$(upstream_gomod "k8s.io/kubernetes@$K8S_VERSION")
  staging_version=v0.${K8S_VERSION#v1.} # staging modules are published as v0.<minor>.<patch>
  write_wrapper "$work/kubernetes" kubernetes k8s.io/kubernetes "$K8S_VERSION" "$staging_version" "$gomod"
  ldflags=$(kubernetes_ldflags)
  for bin in "$@"; do
    # Same build tags as upstream release builds (hack/lib/golang.sh).
    timed_build "$bin" go -C "$work/kubernetes" build -mod=mod -trimpath -tags selinux,notest,grpcnotrace \
      -ldflags "$ldflags" -o "$out/$bin" "k8s.io/kubernetes/cmd/$bin"
  done
}

build_helm() {
  local out=$1
  # helm's module has no relative replaces, so plain `go install` works.
  GOBIN=$out go install -trimpath \
    -ldflags "-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION -X $HELM_MODULE/internal/version.gitTreeState=clean" \
    "$HELM_MODULE/cmd/helm@$HELM_VERSION"
}

ensure_openssl() {
  command -v openssl >/dev/null && return
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing openssl (needed by start for the cluster PKI) ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
  else
    log "warning: openssl is missing; start needs it (apt-get install openssl)"
  fi
}

cmd_install() {
  local node=false
  case ${1:-} in
  --node) node=true ;;
  "") ;;
  *) die "usage: $0 install [--node]" ;;
  esac
  install_control_plane
  if $node; then install_node; fi
}

install_control_plane() {
  command -v go >/dev/null || die "go is required to build the control plane (Go >= 1.26)"
  ensure_openssl
  mkdir -p "$CACHE_ROOT"
  # Serialise concurrent installs; the second one then finds the finished cache.
  exec 9>"$CACHE_ROOT/.lock"
  flock 9

  if installed && check_versions "$BIN_DIR"; then
    log "already installed: $BIN_DIR"
    return
  fi

  local t0=$EPOCHREALTIME stage
  # Leftovers of interrupted installs (the lock guarantees none is running).
  rm -rf "$CACHE_ROOT"/.tmp-*
  stage=$(mktemp -d "$CACHE_ROOT/.tmp-XXXXXX")
  # shellcheck disable=SC2064 # expand now: $stage is local
  trap "rm -rf '$stage'" EXIT
  trap 'exit 130' INT TERM
  chmod 755 "$stage" # mktemp makes it private; the binaries are for every user
  mkdir -p "$stage/bin"
  export CGO_ENABLED=0

  log "$(go version); building into $INSTALL_DIR"
  timed_build "etcd $ETCD_VERSION" build_etcd "$stage/src" "$stage/bin"
  build_kubernetes "$stage/src" "$stage/bin" kube-apiserver kube-controller-manager kubectl
  timed_build "helm $HELM_VERSION" build_helm "$stage/bin"

  check_versions "$stage/bin" || die "built binaries do not report the pinned versions"
  printf 'kubernetes %s\netcd %s\nhelm %s\n%s\n' "$K8S_VERSION" "$ETCD_VERSION" "$HELM_VERSION" "$(go version)" \
    >"$stage/installed"
  # Publish atomically: a reader sees either no install or a complete one.
  if [[ -e $INSTALL_DIR ]]; then
    mv "$INSTALL_DIR" "$stage/previous"
  fi
  mv "$stage" "$INSTALL_DIR"
  rm -rf "$INSTALL_DIR/previous"
  trap - EXIT INT TERM
  log "installed in $(elapsed "$t0"): $BIN_DIR"
}

# --- processes ----------------------------------------------------------------------------------------------------

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

# --- start --------------------------------------------------------------------------------------------------------

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

# Runs openssl quietly (key generation prints progress dots), showing its output only when it fails.
ossl() {
  local out
  out=$(openssl "$@" 2>&1) || {
    log "openssl $1 failed:"
    printf '%s\n' "$out" >&2
    return 1
  }
}

# ECDSA P-256 keys: generated in milliseconds where RSA takes about a quarter second each, and accepted by
# Kubernetes (ES256 service-account tokens too) and by rustls.
NEW_KEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)

new_ca() { # pki name commonName
  local pki=$1 name=$2 cn=$3
  ossl req -x509 -new "${NEW_KEY[@]}" -nodes -sha256 -days 365 -subj "/CN=$cn" \
    -keyout "$pki/$name.key" -out "$pki/$name.crt" -config <(
      printf '[req]\ndistinguished_name=dn\nx509_extensions=ext\n[dn]\n'
      printf '[ext]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n'
      printf 'subjectKeyIdentifier=hash\n'
    )
}

new_cert() { # pki ca name subject extendedKeyUsage [subjectAltName]
  local pki=$1 ca=$2 name=$3 subject=$4 eku=$5 san=${6:-}
  ossl req -new "${NEW_KEY[@]}" -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr"
  ossl x509 -req -sha256 -days 365 -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -out "$pki/$name.crt" -extfile <(
      printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n'
      printf 'extendedKeyUsage=%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "$eku"
      [[ -z $san ]] || printf 'subjectAltName=%s\n' "$san"
    )
  rm -f "$pki/$name.csr"
}

make_pki() {
  local pki=$1
  mkdir -p "$pki"
  chmod 700 "$pki"
  new_ca "$pki" ca ferry-local-ca
  # kube-rs (rustls) verifies the IP SAN, so 127.0.0.1 must be in it; the in-cluster names keep the cert realistic.
  new_cert "$pki" ca apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,DNS:localhost,IP:$NODE_IP,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  new_cert "$pki" ca admin "/O=system:masters/CN=ferry-admin" clientAuth
  # The identity the bootstrap RBAC policy grants kube-controller-manager's permissions to.
  new_cert "$pki" ca controller-manager "/CN=system:kube-controller-manager" clientAuth
  # Front proxy (request-header authentication): delegated authentication in kube-controller-manager and any
  # aggregated API server needs its CA published, or they log errors forever.
  new_ca "$pki" front-proxy-ca ferry-local-front-proxy-ca
  new_cert "$pki" front-proxy-ca front-proxy-client "/CN=front-proxy-client" clientAuth
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/sa.key"
  ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
  if $NODE_MODE; then make_node_pki "$pki"; fi
}

write_kubeconfig() { # file server pki user
  local file=$1 server=$2 pki=$3 user=$4
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ferry-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$user.crt")
    client-key-data: $(base64 -w0 <"$pki/$user.key")
contexts:
- name: ferry-local
  context:
    cluster: ferry-local
    user: $user
current-context: ferry-local
EOF
  chmod 600 "$file"
}

# --- components ---

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

# --- env / bin-dir ------------------------------------------------------------------------------------------------

cmd_env() {
  require_installed
  # shellcheck disable=SC2016 # $PATH is expanded by the caller's eval
  printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
}

cmd_bin_dir() {
  require_installed
  printf '%s\n' "$BIN_DIR"
}

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

NODE_MODE=false
# shellcheck source=e2e/node.bash
source "$(dirname "$SCRIPT")/node.bash"

# One line, so bash never reads further from this file after main returns (safe if the file changes meanwhile).
main "$@"; exit "$?"
