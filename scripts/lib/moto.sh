# Sourced by scripts/test: makes moto (an AWS API mock server) available to the tests and
# exports THREEPORT_MOTO_SERVER. The tests start their own moto_server on free loopback ports.

MOTO_VERSION=5.2.1

ensure_moto_server() {
  local scripts bin
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  bin="$scripts/moto_server"
  if ! python3 -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null || [ ! -x "$bin" ]; then
    echo "moto: installing moto[server]==$MOTO_VERSION from PyPI"
    python3 -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
  [ -x "$bin" ] || { echo "moto_server unavailable" >&2; return 1; }
  export THREEPORT_MOTO_SERVER="$bin"
  echo "moto: $(python3 -c 'import moto; print(moto.__version__)') at $bin"
}
