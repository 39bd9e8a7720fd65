# `install`, `env` and `bin-dir` of e2e/control-plane.sh (sourced by it): builds etcd, kube-apiserver,
# kube-controller-manager, kubectl and helm from the Go module proxy into the versioned cache, and finds them there.
# shellcheck shell=bash disable=SC2317 # functions passed to timed_build look unreachable to shellcheck

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

cmd_env() {
  require_installed
  # shellcheck disable=SC2016 # $PATH is expanded by the caller's eval
  printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
}

cmd_bin_dir() {
  require_installed
  printf '%s\n' "$BIN_DIR"
}
