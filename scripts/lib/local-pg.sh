# Shared by scripts/rehearse and bench/run: throwaway local PostgreSQL clusters.
# Source it, set WORK to a scratch directory, then call start_cluster NAME.
# Debian layout: server binaries under /usr/lib/postgresql/<major>/bin (PG_BIN overrides).

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_missing() {  # install_missing PKG... (Debian/Ubuntu, as root)
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (install them with apt-get as root)" >&2
    return 1
  fi
  echo "installing ${missing[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

pg_bin_dir() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local v
  v=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
  [ -n "$v" ] || { echo "no PostgreSQL server found under /usr/lib/postgresql" >&2; return 1; }
  echo "/usr/lib/postgresql/$v/bin"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

make_tls() {  # make_tls DIR: a CA and a server certificate for localhost/127.0.0.1 (and $EXTRA_SAN)
  local d=$1
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
      -days 2 -subj "/CN=heroku2rds local CA" -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
      -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1%s\nextendedKeyUsage=serverAuth\n' \
      "${EXTRA_SAN:+,$EXTRA_SAN}" > ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
      -extfile ext.cnf 2>/dev/null
  )
}

# start_cluster NAME PASSWORD [EXTRA_CONF]: initdb + start with TLS required over TCP;
# prints the port. Superuser "postgres" with PASSWORD.
start_cluster() {
  local name=$1 password=$2 extra=${3:-} bin dir port
  bin=$(pg_bin_dir)
  dir="$WORK/$name"
  mkdir -p "$dir"
  [ -f "$WORK/tls/ca.pem" ] || make_tls "$WORK/tls"
  printf '%s' "$password" > "$dir/pw"
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORK"
  as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 --pwfile="$dir/pw" >/dev/null
  cp "$WORK/tls/server.crt" "$WORK/tls/server.key" "$dir/data/"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/data/server.crt" "$dir/data/server.key"
  chmod 600 "$dir/data/server.key"
  port=$(free_port)
  cat >> "$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
max_connections = 100
$extra
CONF
  printf 'local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n' \
    > "$dir/data/pg_hba.conf"
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
  echo "$port"
}

stop_clusters() {  # stops every cluster under $WORK and removes it
  local bin d
  bin=$(pg_bin_dir) || return 0
  for d in "$WORK"/*/data; do
    [ -f "$d/postmaster.pid" ] && as_postgres "$bin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
  done
  rm -rf "$WORK"
}

# sql_as USER PASSWORD PORT DB SQL: run SQL over TLS (sslmode=require).
sql_as() {
  PGPASSWORD=$2 psql -X -q -v ON_ERROR_STOP=1 \
    "host=localhost port=$3 user=$1 dbname=$4 sslmode=require" -c "$5"
}
