#!/usr/bin/env bash
# Installs what ferry-server's tests need, outside the clone, and is fast when everything is already there:
#   - a Python venv at $FERRY_CACHE_DIR/venv with onnxruntime (the library the server loads), the packages that
#     regenerate the test models (scikit-learn, skl2onnx, onnx) and a standard OIP client (tritonclient);
#   - a stable link to the ONNX Runtime library at $FERRY_CACHE_DIR/onnxruntime/libonnxruntime.so.1.31.1;
#   - the S3-compatible test server s3s-fs at $FERRY_CACHE_DIR/tools/bin/s3s-fs;
#   - the Azure Blob emulator Azurite (npm) at $FERRY_CACHE_DIR/tools/azurite/node_modules/.bin/azurite-blob;
#   - the GCS emulator fake-gcs-server (Go module) at $FERRY_CACHE_DIR/tools/fake-gcs-server/bin/fake-gcs-server;
#   - the Python runtime's interpreter at $FERRY_CACHE_DIR/venv-python (server-image/python/requirements.txt, the
#     packages the Python image has), which the Python runtime tests give ferry-server as FERRY_PYTHON.
# Prints the library path on the last line.
set -euo pipefail

FERRY_CACHE_DIR="${FERRY_CACHE_DIR:-$HOME/.cache/ferry}"
ONNXRUNTIME_VERSION=1.31.1
PYTHON_PACKAGES=(
  "onnxruntime==${ONNXRUNTIME_VERSION}"
  "numpy==2.4.6"
  "scikit-learn==1.9.1"
  "skl2onnx==1.20.0"
  "onnx==1.23.2"
  "tritonclient[http,grpc]==2.73.0"
)
S3S_FS_VERSION=0.14.1 # the newest release that builds with rust-version 1.92
AZURITE_VERSION=3.37.0
FAKE_GCS_SERVER_VERSION=v1.56.1

venv="$FERRY_CACHE_DIR/venv"
tools="$FERRY_CACHE_DIR/tools"
library_link="$FERRY_CACHE_DIR/onnxruntime/libonnxruntime.so.${ONNXRUNTIME_VERSION}"
stamp="$venv/.ferry-packages"

wanted_packages="${PYTHON_PACKAGES[*]}"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted_packages" ]]; then
  echo "python venv: $venv (up to date)"
else
  echo "python venv: installing ${PYTHON_PACKAGES[*]} into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
  echo "$wanted_packages" >"$stamp"
fi

library=$("$venv/bin/python" - <<PY
import pathlib, onnxruntime
path = pathlib.Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime.so.${ONNXRUNTIME_VERSION}"
print(path if path.is_file() else "")
PY
)
if [[ -z "$library" ]]; then
  echo "the onnxruntime wheel in $venv has no capi/libonnxruntime.so.${ONNXRUNTIME_VERSION}" >&2
  exit 1
fi
mkdir -p "$(dirname "$library_link")"
ln -sfn "$library" "$library_link"
echo "onnxruntime library: $library_link -> $library"

if [[ -x "$tools/bin/s3s-fs" ]] && "$tools/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
  echo "s3s-fs: $tools/bin/s3s-fs (up to date)"
else
  echo "s3s-fs: cargo install s3s-fs@$S3S_FS_VERSION into $tools (a few minutes, once)"
  cargo install --quiet --locked --root "$tools" "s3s-fs@$S3S_FS_VERSION" --features binary
fi

# True when the program $1 is there and the stamp $2 names version $3.
current() { [[ -x "$1" && -f "$2" && "$(cat "$2")" == "$3" ]]; }

azurite="$tools/azurite"
if current "$azurite/node_modules/.bin/azurite-blob" "$azurite/.ferry-version" "$AZURITE_VERSION"; then
  echo "azurite: $azurite/node_modules/.bin/azurite-blob (up to date)"
else
  echo "azurite: npm install azurite@$AZURITE_VERSION into $azurite"
  npm install --prefix "$azurite" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
  echo "$AZURITE_VERSION" >"$azurite/.ferry-version"
fi

fake_gcs="$tools/fake-gcs-server"
if current "$fake_gcs/bin/fake-gcs-server" "$fake_gcs/.ferry-version" "$FAKE_GCS_SERVER_VERSION"; then
  echo "fake-gcs-server: $fake_gcs/bin/fake-gcs-server (up to date)"
else
  echo "fake-gcs-server: go install github.com/fsouza/fake-gcs-server@$FAKE_GCS_SERVER_VERSION into $fake_gcs (a minute, once)"
  GOBIN="$fake_gcs/bin" go install "github.com/fsouza/fake-gcs-server@$FAKE_GCS_SERVER_VERSION"
  echo "$FAKE_GCS_SERVER_VERSION" >"$fake_gcs/.ferry-version"
fi

# The Python runtime's packages, exactly as the Python image pins them.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runtime_requirements="$here/../python/requirements.txt"
runtime_venv="$FERRY_CACHE_DIR/venv-python"
runtime_stamp="$runtime_venv/.ferry-requirements"
if [[ -x "$runtime_venv/bin/python" && -f "$runtime_stamp" ]] && cmp -s "$runtime_stamp" "$runtime_requirements"; then
  echo "python runtime venv: $runtime_venv (up to date)"
else
  echo "python runtime venv: installing server-image/python/requirements.txt into $runtime_venv"
  python3 -m venv "$runtime_venv"
  "$runtime_venv/bin/pip" install --quiet --disable-pip-version-check -r "$runtime_requirements"
  cp "$runtime_requirements" "$runtime_stamp"
fi

echo "$library_link"
