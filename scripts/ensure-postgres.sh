#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers and prints its admin URL.
# Uses DATABASE_URL when given, else 127.0.0.1:5432 when something answers
# there, else starts a private cluster (installing Debian's server package
# first if its binaries are missing) on 127.0.0.1:${WARDEN_PG_PORT:-55432}.
set -euo pipefail

answers() { # host port
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$1" -p "$2" -t 2
  else
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
  fi
}

if [ -n "${DATABASE_URL:-}" ]; then
  echo "$DATABASE_URL"
  exit 0
fi
if answers 127.0.0.1 5432; then
  echo "postgres://postgres@127.0.0.1:5432/postgres"
  exit 0
fi

port="${WARDEN_PG_PORT:-55432}"
data="${WARDEN_PG_DIR:-$HOME/.cache/warden/pg}"
url="postgres://postgres@127.0.0.1:$port/postgres"
if answers 127.0.0.1 "$port"; then
  echo "$url"
  exit 0
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "no PostgreSQL server binaries: installing Debian's postgresql package" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

# initdb refuses to run as root: run the private cluster as `postgres`.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
mkdir -p "$data"
if [ "$(id -u)" = 0 ]; then chown -R postgres "$data"; fi
if [ ! -f "$data/PG_VERSION" ]; then
  as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust >&2
fi
as_owner "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-h 127.0.0.1 -p $port -k /tmp" start >&2
echo "$url"
