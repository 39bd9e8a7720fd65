# The local node of e2e/control-plane.sh (sourced by it; not a script of its own): kube-scheduler, containerd with
# runc and the CNI bridge plugin, the kubelet and kube-proxy, next to the control plane, so ferry-server pods really
# run. `install --node` builds the node binaries; `start --node` starts them after the control plane; `stop`
# removes every pod, mount, cgroup, iptables chain, bridge and sysctl change the node made.
#
# One node at a time per machine: it owns the bridge ferry0 (the node's address, 10.244.0.1, is the pods'
# gateway), the cgroup /ferry-node in every hierarchy, and the KUBE-* iptables chains.
# shellcheck shell=bash disable=SC2317

# Kubernetes 1.36 supports containerd 2.x only; 2.2 is the newest line that still runs on cgroup v1 hosts
# (deprecated there, maintained until 2029).
CONTAINERD_VERSION=v2.2.9
NODE_INSTALL_DIR=$CACHE_ROOT/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION
NODE_BIN_DIR=$NODE_INSTALL_DIR/bin
NODE_STAMP=$NODE_INSTALL_DIR/installed
NODE_BINARIES=(kube-scheduler kubelet kube-proxy containerd containerd-shim-runc-v2 ctr cri-reset pause)
PAUSE_IMAGE=ferry.local/pause:3.10
PAUSE_ARCHIVE=$NODE_INSTALL_DIR/images/pause.tar
# Debian's packages: runc 1.1 (the OCI runtime), the CNI plugins, iptables for kube-proxy, conntrack for its
# UDP clean-up.
NODE_PACKAGES=(runc containernetworking-plugins iptables conntrack)
RUNC=${FERRY_NODE_RUNC:-/usr/sbin/runc} # FERRY_NODE_RUNC: another runc, e.g. a debugging wrapper
CNI_BIN_DIR=/usr/lib/cni
NODE_INSTALL_HINT="bash e2e/control-plane.sh install --node"

NODE_NAME=ferry-node
NODE_BRIDGE=ferry0
NODE_IP=10.244.0.1
POD_SUBNET=10.244.0.0/24
CGROUP_ROOT=ferry-node
NODE_OWNER_FILE=/run/ferry-node.dir # the DIR of the running node
NODE_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables)
# Host paths the components use whatever they are configured with (the kubelet's device-plugin directory and
# container-log links, libcni's result cache, the shim sockets): removed on stop when the node created them.
NODE_HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd)
NODE_FORWARD_RULE=(-i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -m comment --comment "ferry-node: pods stay on this machine" -j DROP)
E2E_DIR=$(dirname "$SCRIPT")

# --- install ------------------------------------------------------------------------------------------------------

node_installed() {
  [[ -f $NODE_STAMP && -f $PAUSE_ARCHIVE ]] || return 1
  local b
  for b in "${NODE_BINARIES[@]}"; do [[ -x $NODE_BIN_DIR/$b ]] || return 1; done
}

check_node_versions() {
  local dir=$1 b out
  for b in kube-scheduler kubelet kube-proxy; do
    out=$("$dir/$b" --version 2>&1) || return 1
    [[ $out == "Kubernetes $K8S_VERSION" ]] || return 1
  done
  out=$("$dir/containerd" --version 2>&1) || return 1
  [[ $out == *" $CONTAINERD_VERSION "* || $out == *" $CONTAINERD_VERSION" ]] || return 1
}

build_containerd() {
  local out=$1 cmd
  # containerd's module has no replaces, so `go install` works. btrfs, devmapper and zfs need cgo and headers;
  # the node uses the overlayfs snapshotter.
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    GOBIN=$out go install -trimpath -tags no_btrfs,no_devmapper,no_zfs \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION"
  done
}

build_pause() {
  local out=$1
  command -v gcc >/dev/null || die "gcc is required to build the pause program (apt-get install gcc libc6-dev)"
  gcc -static -Os -Wall -Werror -o "$out/pause" "$E2E_DIR/images/pause.c"
  strip "$out/pause"
}

install_node() {
  ensure_debian_packages "the node" "${NODE_PACKAGES[@]}"
  if node_installed && check_node_versions "$NODE_BIN_DIR"; then
    log "node already installed: $NODE_BIN_DIR"
    return
  fi
  local t0=$EPOCHREALTIME stage
  stage=$(mktemp -d "$CACHE_ROOT/.tmp-node-XXXXXX")
  # shellcheck disable=SC2064 # expand now: $stage is local
  trap "rm -rf '$stage'" EXIT
  chmod 755 "$stage"
  mkdir -p "$stage/bin" "$stage/images"
  export CGO_ENABLED=0
  build_kubernetes "$stage/src" "$stage/bin" kube-scheduler kubelet kube-proxy
  timed_build "containerd $CONTAINERD_VERSION" build_containerd "$stage/bin"
  timed_build cri-reset go -C "$E2E_DIR/cri-reset" build -trimpath -ldflags "-s -w" -o "$stage/bin/cri-reset" .
  timed_build pause build_pause "$stage/bin"
  python3 "$E2E_DIR/images/oci_image.py" --name "$PAUSE_IMAGE" --output "$stage/images/pause.tar" \
    --binary "$stage/bin/pause:/pause" --entrypoint '["/pause"]' --user 65535:65535 >/dev/null
  check_node_versions "$stage/bin" || die "built node binaries do not report the pinned versions"
  printf 'kubernetes %s\ncontainerd %s\n%s\n' "$K8S_VERSION" "$CONTAINERD_VERSION" "$(go version)" >"$stage/installed"
  rm -rf "$stage/src"
  [[ -e $NODE_INSTALL_DIR ]] && mv "$NODE_INSTALL_DIR" "$stage/previous"
  mv "$stage" "$NODE_INSTALL_DIR"
  rm -rf "$NODE_INSTALL_DIR/previous"
  trap - EXIT
  log "node installed in $(elapsed "$t0"): $NODE_BIN_DIR"
}

# --- start --------------------------------------------------------------------------------------------------------

node_preflight() {
  [[ $EUID -eq 0 ]] || die "the local node needs root (containerd, runc, kube-proxy's iptables rules)"
  node_installed || die "the node binaries are not installed in $NODE_BIN_DIR; run: $NODE_INSTALL_HINT"
  [[ -z $(debian_packages_missing "${NODE_PACKAGES[@]}") ]] || die "the node needs Debian's packages; run: $NODE_INSTALL_HINT"
  [[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local ]] || die "CNI plugins missing in $CNI_BIN_DIR"
  grep -qw overlay /proc/filesystems || die "the kernel has no overlayfs (containerd's snapshotter needs it)"
  [[ -d /proc/sys/net/bridge ]] || die "the kernel has no br_netfilter (modprobe br_netfilter)"
  local other
  if [[ -f $NODE_OWNER_FILE ]] && other=$(<"$NODE_OWNER_FILE") && [[ -d $other ]]; then
    die "a local node is already running in $other; stop it with: bash e2e/control-plane.sh stop $other"
  fi
  ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1 ||
    die "bridge $NODE_BRIDGE exists: another node runs, or one was not stopped (ip link del $NODE_BRIDGE)"
}

# Every cgroup v1 hierarchy (or the v2 root) the kubelet's cgroupfs driver will create cgroups in.
cgroup_hierarchies() {
  awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo
}

node_host_setup() {
  printf '%s\n' "$DIR" >"$NODE_OWNER_FILE"
  : >"$DIR/node"
  local key h path
  for path in "${NODE_HOST_PATHS[@]}"; do [[ -e $path ]] || printf '%s\n' "$path"; done >"$DIR/host-paths.created"
  for key in "${NODE_SYSCTLS[@]}"; do printf '%s %s\n' "$key" "$(sysctl -n "$key")"; done >"$DIR/sysctl.saved"
  # Pod -> Service -> pod on the same bridge: forwarded by the host, and un-NATed by conntrack on the bridge.
  for key in "${NODE_SYSCTLS[@]}"; do sysctl -qw "$key=1"; done
  # The bridge exists before the API server starts so it can listen on the node address.
  ip link add "$NODE_BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Nothing of the cluster's may leave this machine: a cluster IP that kube-proxy has not programmed yet goes to
  # the bridge (and fails there) instead of the default route, and pods are not forwarded anywhere but the bridge.
  ip route add "$SERVICE_CIDR" dev "$NODE_BRIDGE"
  iptables -w -I FORWARD "${NODE_FORWARD_RULE[@]}"
  # The kubelet's cgroupRoot must exist; everything it and the pods make stays below it.
  while read -r h; do mkdir -p "$h/$CGROUP_ROOT"; done < <(cgroup_hierarchies)
}

make_node_pki() {
  local pki=$1
  new_cert "$pki" ca scheduler "/CN=system:kube-scheduler" clientAuth
  new_cert "$pki" ca kube-proxy "/CN=system:kube-proxy" clientAuth
  # The Node authorizer and NodeRestriction know a kubelet by this name and group.
  new_cert "$pki" ca kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  new_cert "$pki" ca kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  # kube-apiserver's identity towards kubelets (logs, exec, port-forward).
  new_cert "$pki" ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
}

write_node_configs() {
  local pki=$DIR/pki kubelet_port=$1 kubelet_healthz_port=$2 proxy_healthz_port=$3 proxy_metrics_port=$4
  mkdir -p "$DIR/cni/net.d" "$DIR/containerd" "$DIR/pod-logs"
  cat >"$DIR/cni/net.d/10-ferry.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ferry",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_SUBNET", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$DIR/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  cat >"$DIR/containerd.toml" <<EOF
version = 3
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
# NRI would listen on the host-wide /var/run/nri/nri.sock; nothing here uses it.
disabled_plugins = ["io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri"]

[grpc]
  address = "$DIR/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  # Images are imported, never pulled: no registry is reachable.
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # This machine class withholds CAP_SYS_RESOURCE even from root, so the kubelet's negative OOM score
  # adjustments (-998 for sandboxes) cannot be applied: clamp them to containerd's own.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
        Root = "$DIR/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$DIR/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
  cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine class mounts cgroup v1, which Kubernetes 1.35+ refuses unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$DIR/containerd.sock
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: Webhook
failSwapOn: false
# Mounted Secrets are refreshed on the pod sync: at the default minute, the credential-rotation test in tests/node.rs
# waits most of its time for it. Syncing a few test pods every 10 s costs little.
syncFrequency: 10s
podLogsDir: $DIR/pod-logs
resolvConf: /etc/resolv.conf
# Imported images cannot be pulled again, so the image garbage collector must never remove them; the eviction
# thresholds are low so a busy development disk does not evict the test pods.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
serializeImagePulls: false
EOF
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
mode: iptables
clusterCIDR: $POD_SUBNET
healthzBindAddress: 127.0.0.1:$proxy_healthz_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
# NodePorts only on the node address, never on the machine's own interfaces.
nodePortAddresses: ["$NODE_IP/32"]
# Without CAP_SYS_RESOURCE (see containerd.toml) the default of -999 cannot be applied.
oomScoreAdj: 0
# 0: leave the host's conntrack table settings as they are.
conntrack:
  maxPerCore: 0
  min: 0
EOF
}

ctr_ok() { "$NODE_BIN_DIR/ctr" --address "$DIR/containerd.sock" "$@" >/dev/null 2>&1; }

node_ready() {
  local status
  status=$("$BIN_DIR/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=5s get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || return 1
  [[ $status == True ]]
}

http_ok() { # url: plain HTTP on loopback, without curl
  local rest=${1#http://} host port path out
  host=${rest%%/*} path=/${rest#*/} port=${host##*:} host=${host%:*}
  # shellcheck disable=SC2016 # expanded by the inner bash
  out=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "GET %s HTTP/1.0\r\n\r\n" "$3" >&3 && cat <&3' \
    _ "$host" "$port" "$path" 2>/dev/null) || return 1
  [[ $out == "HTTP/1."?" 200"* ]]
}

# Runs after the control plane is up (its API server already listens on the node address).
start_node() {
  local apiserver_url=$1 scheduler_port kubelet_port kubelet_healthz_port proxy_healthz_port proxy_metrics_port
  read -r scheduler_port kubelet_port kubelet_healthz_port proxy_healthz_port proxy_metrics_port < <(free_ports 5)
  local pki=$DIR/pki
  write_kubeconfig "$DIR/scheduler.kubeconfig" "$apiserver_url" "$pki" scheduler
  write_kubeconfig "$DIR/kubelet.kubeconfig" "$apiserver_url" "$pki" kubelet
  write_kubeconfig "$DIR/kube-proxy.kubeconfig" "$apiserver_url" "$pki" kube-proxy
  write_node_configs "$kubelet_port" "$kubelet_healthz_port" "$proxy_healthz_port" "$proxy_metrics_port"

  launch kube-scheduler "$NODE_BIN_DIR/kube-scheduler" --kubeconfig="$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/scheduler.kubeconfig" --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$scheduler_port" --leader-elect=false

  # The shim and runc are found on PATH.
  launch containerd env PATH="$NODE_BIN_DIR:$PATH" "$NODE_BIN_DIR/containerd" --config "$DIR/containerd.toml"
  wait_for containerd "containerd on $DIR/containerd.sock" ctr_ok version || return 1
  import_image "$DIR" "$PAUSE_ARCHIVE"

  launch kubelet "$NODE_BIN_DIR/kubelet" --config="$DIR/kubelet.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$DIR/kubelet"
  launch kube-proxy "$NODE_BIN_DIR/kube-proxy" --config="$DIR/kube-proxy.yaml"
  wait_for kube-proxy "kube-proxy /healthz" http_ok "http://127.0.0.1:$proxy_healthz_port/healthz" || return 1
  wait_for kubelet "node $NODE_NAME Ready" node_ready || return 1
  # Pods reach the API server through the kubernetes Service (the lease endpoint reconciler publishes it).
  wait_for kube-apiserver "endpoints of the kubernetes Service" kubectl_ok get endpointslice -n default \
    -l kubernetes.io/service-name=kubernetes -o jsonpath='{.items[0].endpoints[0].addresses[0]}' || return 1
}

# `load DIR ARCHIVE...`: import image archives into the node's containerd.
cmd_load() {
  [[ $# -ge 2 ]] || die "usage: $0 load DIR ARCHIVE..."
  local dir archive
  dir=$(realpath "$1")
  shift
  [[ -f $dir/node ]] || die "$dir has no node (start it with: bash e2e/control-plane.sh start --node)"
  for archive in "$@"; do
    import_image "$dir" "$archive"
    log "imported $archive"
  done
}

# ctr prints progress (and containerd's cgroup v1 deprecation notice) on every import: shown only on failure.
import_image() { # dir archive
  local out
  out=$("$NODE_BIN_DIR/ctr" --address "$1/containerd.sock" -n k8s.io images import "$2" 2>&1) ||
    die "importing $2 into containerd failed: $out"
}

# --- stop ---------------------------------------------------------------------------------------------------------

signal_named() { # dir signal name...: the listed components of DIR, and wait for them
  local dir=$1 sig=$2 name pid want
  shift 2
  while read -r name pid; do
    for want in "$@"; do
      if [[ $name == "$want" ]] && ours "$pid" "$dir"; then
        signal "$sig" "$pid"
        wait_gone 10 "$pid" || signal KILL "$pid"
      fi
    done
  done <"$dir/pids"
}

# Processes left of the node: the containerd shims (their command lines name DIR) and anything still in the
# node's cgroups.
kill_node_leftovers() {
  local dir=$1 pid cmdline h f
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/} pid=${pid%/cmdline}
    cmdline=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
    if [[ $cmdline == *"$dir/"* && $pid != "$$" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  while read -r h; do
    [[ -d $h/$CGROUP_ROOT ]] || continue
    while read -r f; do
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$f"
    done < <(find "$h/$CGROUP_ROOT" -name cgroup.procs 2>/dev/null)
  done < <(cgroup_hierarchies)
  sleep 0.2
  while read -r h; do
    if [[ -d $h/$CGROUP_ROOT ]]; then find "$h/$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done < <(cgroup_hierarchies)
  return 0
}

# Rules and chains of kube-proxy and the kubelet: every KUBE-* chain, and the jumps to them.
remove_kube_iptables() {
  local tool table rule chain
  for tool in iptables ip6tables; do
    command -v "$tool" >/dev/null || continue
    for table in filter nat mangle; do
      while read -r rule; do
        # iptables -S quotes arguments with spaces (comments) the way the shell reads them.
        eval "\"\$tool\" -w -t \"\$table\" -D ${rule#-A }" 2>/dev/null || true
      done < <("$tool" -w -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-')
      while read -r chain; do "$tool" -w -t "$table" -F "$chain" 2>/dev/null || true; done < <(
        "$tool" -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'
      )
      while read -r chain; do "$tool" -w -t "$table" -X "$chain" 2>/dev/null || true; done < <(
        "$tool" -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'
      )
    done
  done
  return 0
}

# Lazily unmounts everything below DIR (pod volumes, container root filesystems), deepest first, so deleting DIR
# can never reach through a bind mount into the host.
unmount_below() {
  local dir=$1 m
  while read -r m; do umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"; done < <(
    awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
  )
  ! awk -v d="$dir/" 'index($5, d) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo
}

stop_node() {
  local dir=$1 key value path
  # The kubelet first, so it does not restart what the runtime removes; then every pod through the CRI, which
  # also releases each pod's network (veth, IP).
  signal_named "$dir" TERM kube-proxy kubelet
  if [[ -S $dir/containerd.sock ]] && "$NODE_BIN_DIR/ctr" --address "$dir/containerd.sock" version >/dev/null 2>&1; then
    "$NODE_BIN_DIR/cri-reset" -endpoint "unix://$dir/containerd.sock" -timeout 60s >&2 ||
      log "warning: not every pod sandbox was removed; killing what is left"
  fi
  stop_processes "$dir"
  kill_node_leftovers "$dir"
  remove_kube_iptables
  while iptables -w -D FORWARD "${NODE_FORWARD_RULE[@]}" 2>/dev/null; do :; done
  # Its addresses and routes go with it.
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  if [[ -f $dir/sysctl.saved ]]; then
    while read -r key value; do sysctl -qw "$key=$value" || true; done <"$dir/sysctl.saved"
  fi
  unmount_below "$dir" || die "mounts remain below $dir; not deleting it (see /proc/self/mountinfo)"
  if [[ -f $dir/host-paths.created ]]; then
    while read -r path; do rm -rf "$path"; done <"$dir/host-paths.created"
  fi
  if [[ $(cat "$NODE_OWNER_FILE" 2>/dev/null) == "$dir" ]]; then rm -f "$NODE_OWNER_FILE"; fi
}
