# Sourced by scripts/test: makes a PostgreSQL reachable for the tests and exports
# THREEPORT_TEST_POSTGRES_URL. Uses the server on 127.0.0.1:5432 when it accepts user postgres
# without a password (as on the project's machines); otherwise starts one: the installed
# cluster, or a throwaway one in a temporary directory (installing PostgreSQL with apt when it
# is missing). Never a skip: if none can be had, the tests fail.

pg_bin_dir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_accepts() { # url
  psql "$1" -Atqc 'select 1' >/dev/null 2>&1
}

ensure_postgres() {
  local default_url="postgres://postgres@127.0.0.1:5432/postgres"
  export THREEPORT_TEST_POSTGRES_URL="${THREEPORT_TEST_POSTGRES_URL:-$default_url}"
  if command -v psql >/dev/null 2>&1 && pg_accepts "$THREEPORT_TEST_POSTGRES_URL"; then
    echo "PostgreSQL: using $THREEPORT_TEST_POSTGRES_URL"
    return 0
  fi
  # The machine's own cluster, if installed but stopped.
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do
      pg_accepts "$THREEPORT_TEST_POSTGRES_URL" && { echo "PostgreSQL: started cluster $version/main"; return 0; }
      sleep 0.5
    done
  fi
  # Install it if missing, then run a throwaway cluster with trust auth on a free port.
  if [ -z "$(pg_bin_dir)" ]; then
    echo "PostgreSQL: not installed; installing with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  local bin port dir
  bin=$(pg_bin_dir)
  [ -n "$bin" ] || { echo "PostgreSQL could not be installed" >&2; return 1; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir=$(mktemp -d /tmp/threeport-pg.XXXXXX)
  chown postgres "$dir" 2>/dev/null || true
  as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  # TLS like a stock Debian server (the TLS tests need it): a throwaway self-signed certificate.
  openssl req -new -x509 -days 2 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.crt" >/dev/null 2>&1
  chmod 600 "$dir/server.key"
  chown postgres "$dir/server.key" "$dir/server.crt" 2>/dev/null || true
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" \
    start >/dev/null
  export THREEPORT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  THREEPORT_PG_STOP="as_postgres $bin/pg_ctl -D $dir/data -m fast stop; rm -rf $dir"
  trap 'eval "$THREEPORT_PG_STOP" >/dev/null 2>&1 || true' EXIT
  echo "PostgreSQL: throwaway cluster on 127.0.0.1:$port"
}

# Drops the databases earlier test runs created.
drop_test_databases() {
  psql "$THREEPORT_TEST_POSTGRES_URL" -Atqc \
    "select 'DROP DATABASE IF EXISTS ' || datname || ';' from pg_database where datname like 'threeport\_test\_%' or datname like 'threeport\_bench\_%'" \
    | psql "$THREEPORT_TEST_POSTGRES_URL" -q >/dev/null 2>&1 || true
}
