#!/usr/bin/env bash
# Builds the four images Ferry's real-node e2e needs as OCI image-layout tar archives, without a container engine
# or a registry, for `ctr -n k8s.io images import ARCHIVE`:
#
#   ferry.local/pause:3.10          the sandbox (pause) image, from e2e/images/pause.c
#   ferry.local/ferry:TAG           the operator, like the Dockerfile at the repository root
#   ferry.local/ferry-server:TAG    the model server and ONNX Runtime, like server-image/Dockerfile
#   ferry.local/ferry-server-python:TAG  the model server with Debian's CPython 3.11 and the Python runtime's
#                                   wheels (server-image/python/requirements.txt), like server-image/Dockerfile.python
#
# Usage: e2e/images/build.sh [--out DIR] [--tag TAG]
#   --out DIR   where the archives go (default $FERRY_CACHE_DIR/images, FERRY_CACHE_DIR defaulting to ~/.cache/ferry)
#   --tag TAG   tag of the ferry and ferry-server images (default e2e)
# Inputs: ${CARGO_TARGET_DIR:-$FERRY_CACHE_DIR/target}/release/{ferry,ferry-server} and
#         $FERRY_CACHE_DIR/onnxruntime/libonnxruntime.so.1.31.1 (override with FERRY_ONNXRUNTIME_SOURCE),
#         Debian's python3.11 (apt-get install python3.11), and the wheels, installed once into
#         $FERRY_CACHE_DIR/python-image/site-packages from PyPI (re-installed when requirements.txt changes).
# Prints the path of each archive. Each archive is replaced atomically; nothing is cached, rebuilding takes seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

cache_dir="${FERRY_CACHE_DIR:-$HOME/.cache/ferry}"
out="$cache_dir/images"
tag="e2e"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --out=*) out="${1#--out=}"; shift ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --tag=*) tag="${1#--tag=}"; shift ;;
        -h|--help) sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

target_dir="${CARGO_TARGET_DIR:-$cache_dir/target}"
ferry_bin="$target_dir/release/ferry"
server_bin="$target_dir/release/ferry-server"
onnxruntime_version="1.31.1"
onnxruntime="${FERRY_ONNXRUNTIME_SOURCE:-$cache_dir/onnxruntime/libonnxruntime.so.$onnxruntime_version}"
python="${PYTHON:-python3}"

missing=0
for bin in "$ferry_bin" "$server_bin"; do
    [ -x "$bin" ] || { echo "build.sh: $bin is missing" >&2; missing=1; }
done
if [ "$missing" = 1 ]; then
    # The commands the two Dockerfiles run (one package each, so each gets the features its Dockerfile build has).
    echo "build.sh: build the release binaries first:" >&2
    echo "  cd $repo && export CARGO_TARGET_DIR=$target_dir" >&2
    echo "  cargo build --release --locked --bin ferry && cargo build --release --locked -p ferry-server" >&2
fi
if [ ! -f "$onnxruntime" ]; then
    echo "build.sh: $onnxruntime is missing; fetch ONNX Runtime first:" >&2
    echo "  (cd $repo && bash server-image/scripts/setup-test-deps.sh)" >&2
    missing=1
fi
debian_python=/usr/bin/python3.11
if [ ! -x "$debian_python" ] || [ ! -d /usr/lib/python3.11 ]; then
    echo "build.sh: Debian's CPython 3.11 is missing: apt-get install python3.11" >&2
    missing=1
fi
for tool in gcc strip ldd "$python"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build.sh: '$tool' is not installed (needs gcc with static glibc: apt-get install gcc libc6-dev binutils)" >&2
        missing=1
    fi
done
[ "$missing" = 0 ] || exit 1

mkdir -p "$out"
out="$(cd "$out" && pwd)"

# The pause binary, static so the image needs nothing else. Built to a temporary name and renamed.
pause_tmp="$(mktemp "$out/.pause.XXXXXX")"
trap 'rm -f "$pause_tmp"' EXIT
gcc -static -Os -Wall -o "$pause_tmp" "$here/pause.c"
strip "$pause_tmp"
chmod 0755 "$pause_tmp"
mv -f "$pause_tmp" "$out/pause"

image() { "$python" "$here/oci_image.py" "$@" >&2; }

image --name ferry.local/pause:3.10 --output "$out/pause.tar" \
    --file "$out/pause:/pause:0755" \
    --entrypoint '["/pause"]' --user 65535:65535

image --name "ferry.local/ferry:$tag" --output "$out/ferry.tar" \
    --binary "$ferry_bin:/usr/bin/ferry" \
    --entrypoint '["/usr/bin/ferry"]' --cmd '["run"]' \
    --user 65532:65532 --expose 9090

image --name "ferry.local/ferry-server:$tag" --output "$out/ferry-server.tar" \
    --binary "$server_bin:/usr/bin/ferry-server" \
    --file "$onnxruntime:/usr/lib/ferry/libonnxruntime.so.$onnxruntime_version:0644" \
    --lib-from "$onnxruntime" \
    --dir /var/lib/ferry:0755:65532:65532 \
    --env "FERRY_ONNXRUNTIME_LIBRARY=/usr/lib/ferry/libonnxruntime.so.$onnxruntime_version" \
    --env FERRY_WORK_DIR=/var/lib/ferry \
    --entrypoint '["/usr/bin/ferry-server"]' \
    --user 65532:65532 --expose 8080 --expose 8081

# The Python runtime's wheels, for CPython 3.11 on manylinux x86_64, installed into a directory of their own once
# per requirements.txt (pip's cache keeps the downloads).
requirements="$repo/server-image/python/requirements.txt"
site="$cache_dir/python-image/site-packages"
if [ ! -f "$site/.ferry-requirements" ] || ! cmp -s "$site/.ferry-requirements" "$requirements"; then
    echo "build.sh: installing the Python runtime's wheels into $site" >&2
    rm -rf "$site"
    mkdir -p "$site"
    "$python" -m pip install --quiet --disable-pip-version-check --no-compile --only-binary=:all: \
        --python-version 3.11 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        --target "$site" -r "$requirements" >&2
    cp "$requirements" "$site/.ferry-requirements"
fi

# Debian's interpreter and standard library, and the wheels where Debian's site module looks for local packages.
# Test suites, caches and the stdlib modules a server never imports stay out.
image --name "ferry.local/ferry-server-python:$tag" --output "$out/ferry-server-python.tar" \
    --binary "$server_bin:/usr/bin/ferry-server" \
    --binary "$debian_python:/usr/bin/python3.11" \
    --tree /usr/lib/python3.11:/usr/lib/python3.11 \
    --tree "$site:/usr/local/lib/python3.11/dist-packages" \
    --tree-exclude __pycache__ --tree-exclude test --tree-exclude tests --tree-exclude idlelib \
    --tree-exclude tkinter --tree-exclude turtledemo --tree-exclude ensurepip --tree-exclude lib2to3 \
    --tree-exclude config-3.11-x86_64-linux-gnu \
    --dir /var/lib/ferry:0755:65532:65532 \
    --env FERRY_PYTHON=/usr/bin/python3.11 \
    --env FERRY_WORK_DIR=/var/lib/ferry \
    --entrypoint '["/usr/bin/ferry-server"]' \
    --user 65532:65532 --expose 8080 --expose 8081

echo "$out/pause.tar"
echo "$out/ferry.tar"
echo "$out/ferry-server.tar"
echo "$out/ferry-server-python.tar"
