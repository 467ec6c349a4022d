# Sourced by scripts/test: builds and installs the Python package (bindings/python) into a
# virtual environment in the target directory, as `pip install ./bindings/python` does, and
# runs its pytest suite against the binaries built before.

PYTEST_VERSION=9.2.0
MATURIN_VERSION=1.16.0

python_tests() {
  local target_dir venv python
  # Absolute: maturin runs cargo from bindings/python, where a relative target would be another.
  mkdir -p "$1"
  target_dir=$(cd "$1" && pwd)
  venv="$target_dir/python-venv"
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
    echo "Python 3.9 or later is required for the Python package" >&2
    return 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  python="$venv/bin/python"
  "$python" -m pip install -q --disable-pip-version-check "pytest==$PYTEST_VERSION" "maturin==$MATURIN_VERSION"
  # The package's own build: maturin through pip, into the shared target directory with the
  # dev profile, so only the extension module and what its features change are compiled.
  CARGO_TARGET_DIR="$target_dir" MATURIN_PEP517_ARGS="--profile dev" \
    "$python" -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps ./bindings/python
  THREEPORT_SERVER_BIN="$target_dir/debug/threeport-server" \
    "$python" -m pytest -q -p no:cacheprovider bindings/python/tests 2>&1 | tee "$target_dir/python-test-output.txt"
}
