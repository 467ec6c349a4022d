# Sourced by scripts/test: builds and installs the Python package (bindings/python) into a
# virtual environment in the target directory, as `pip install ./bindings/python` does, and
# runs its pytest suite against the binaries built before. Everything it needs (maturin,
# pytest) is installed into that environment: nothing is expected on PATH.

PYTEST_VERSION=9.2.0
MATURIN_VERSION=1.16.0
# The property-based check of the OpenAPI document against the server, and the type check.
SCHEMATHESIS_VERSION=4.32.5
MYPY_VERSION=2.4.1
# Drives Debian's headless Chromium (through its chromedriver) in the console's browser tests.
SELENIUM_VERSION=4.51.0

python_tests() { # absolute target directory
  local target_dir="$1" venv python
  venv="$target_dir/python-venv"
  # Called in an `||` list, where `set -e` does not apply: every step checks its own status.
  rm -f "$target_dir/python-test-output.txt"
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
    echo "Python 3.9 or later is required for the Python package" >&2
    return 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || return
  fi
  python="$venv/bin/python"
  "$python" -m pip install -q --disable-pip-version-check "pytest==$PYTEST_VERSION" "maturin==$MATURIN_VERSION" "schemathesis==$SCHEMATHESIS_VERSION" "mypy==$MYPY_VERSION" "selenium==$SELENIUM_VERSION" || return
  # The package's own build: maturin through pip, into the shared target directory with the
  # dev profile, so only the extension module and what its features change are compiled.
  # maturin's build backend runs `maturin` from PATH: the environment's own comes first.
  PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="$target_dir" MATURIN_PEP517_ARGS="--profile dev" \
    "$python" -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps ./bindings/python || return
  THREEPORT_SERVER_BIN="$target_dir/debug/threeport-server" \
    "$python" -m pytest -q -p no:cacheprovider bindings/python/tests 2>&1 | tee "$target_dir/python-test-output.txt"
}
