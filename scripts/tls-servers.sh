#!/usr/bin/env bash
# Starts (or stops) a private set of TLS-only servers for the TLS tests:
#
#   bash scripts/tls-servers.sh start DIR   # idempotent; writes DIR/env
#   bash scripts/tls-servers.sh stop  DIR   # tolerant of servers not running
#
#   PostgreSQL 15  127.0.0.1,::1:5439  hostssl only (scram), role rollback_tls, db tlsdb
#   Redis          127.0.0.1,::1:6390  TLS only (plain port 0), ACL user rbuser
#   MariaDB        127.0.0.1,::1:3316  require_secure_transport, user rbtls, db tlsdb
#   HTTPS (python) 127.0.0.1,::1:8443  /health (needs apikey header), /slow
#
# All state lives in DIR; the default servers (5432/3306/6379) and /etc are never
# touched. Certificates come from a throwaway CA in DIR/ca.crt; DIR/other-ca.crt is
# an unrelated CA for "wrong trust root" tests. `source DIR/env` for the details.
set -euo pipefail

PG_PORT=5439
REDIS_PORT=6390
MYSQL_PORT=3316
HTTPS_PORT=8443

PG_USER=rollback_tls PG_PASS=tls-secret-PW1 PG_DB=tlsdb
REDIS_USER=rbuser REDIS_PASS=redis-secret-PW2
MYSQL_USER=rbtls MYSQL_PASS=mysql-secret-PW3 MYSQL_DB=tlsdb
HTTPS_KEY=https-secret-PW4

PG_BIN=/usr/lib/postgresql/15/bin
WAIT_SECONDS=30

log() { printf '[tls-servers] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
ACTION=$1
case $ACTION in
  start) mkdir -p "$2" ;;
  stop) [ -d "$2" ] || exit 0 ;;
  *) usage ;;
esac
DIR=$(cd "$2" && pwd -P)
# Needed to create files for, and run commands as, the postgres and mysql users.
[ "$(id -u)" = 0 ] || die "must run as root"
MYSQL_RUN=$DIR/mysql-run # socket + pidfile, in a mysql-owned directory

# --- helpers -----------------------------------------------------------------

# pid from a pidfile, only if that process is alive and runs the expected
# executable (a stale pidfile may name a recycled pid).
live_pid() { # pidfile exe-substring
  local pid
  [ -s "$1" ] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in *"$2"*) echo "$pid" ;; *) return 1 ;; esac
}

port_busy() { ss -Hltn "sport = :$1" | grep -q .; }

# Refuse to start when someone else already holds the port: otherwise the wait
# below would happily "succeed" against a foreign server.
check_port_free() { # name port
  port_busy "$2" || return 0
  die "$1: port $2 is already in use by another process:
$(ss -Hltnp "sport = :$2")"
}

# Poll a readiness probe; on timeout name the server and show its log tail.
wait_for() { # name logfile probe...
  local name=$1 logfile=$2; shift 2
  local deadline=$((SECONDS + WAIT_SECONDS)) out
  while ! out=$("$@" 2>&1); do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "ERROR: $name did not accept connections within ${WAIT_SECONDS}s"
      log "last probe said: ${out:-<nothing>}"
      log "last lines of $logfile:"
      tail -n 25 "$logfile" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
}

# A daemon's parent is init, which here reaps zombies only after a second or
# so: count a zombie as exited (its ports are already closed).
gone() { # pid
  local state
  state=$(sed -n 's/^.*) \(.\) .*$/\1/p' "/proc/$1/stat" 2>/dev/null) || true
  [ -z "$state" ] || [ "$state" = Z ]
}

wait_exit() { # pid seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do gone "$1" && return 0; sleep 0.1; done
  return 1
}

# Run as a service user from "/" (their $HOME/cwd may be unreadable, e.g. /root).
as_user() { (cd / && runuser -u "$1" -- "${@:2}"); }

# A copy of the server key pair owned by a service account: PostgreSQL insists on
# a 0600 key owned by its own user, and mariadbd drops to `mysql` before reading.
install_pair() { # owner destdir
  install -d -m 0700 -o "$1" -g "$1" "$2"
  install -m 0644 -o "$1" -g "$1" "$DIR/server.crt" "$2/server.crt"
  install -m 0600 -o "$1" -g "$1" "$DIR/server.key" "$2/server.key"
  install -m 0644 -o "$1" -g "$1" "$DIR/ca.crt" "$2/ca.crt"
}

# --- certificates --------------------------------------------------------------

make_ca() { # basename CN
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$DIR/$1.key" -out "$DIR/$1.crt" -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
}

make_leaf() { # basename CN extensions
  local ext
  ext=$(mktemp)
  printf '%s\n' "$3" >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$DIR/$1.key" -out "$DIR/$1.csr" -subj "/CN=$2" 2>/dev/null
  # Random serial rather than -CAcreateserial: no ca.srl to keep in sync.
  openssl x509 -req -in "$DIR/$1.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "$ext" -out "$DIR/$1.crt" 2>/dev/null
  rm -f "$ext" "$DIR/$1.csr"
}

make_certs() {
  # Leaves are re-made whenever the CA is (a new CA invalidates them).
  if [ ! -s "$DIR/ca.crt" ] || [ ! -s "$DIR/ca.key" ]; then
    make_ca ca "rollback test CA"
    rm -f "$DIR/server.crt" "$DIR/client.crt"
  fi
  [ -s "$DIR/other-ca.crt" ] || make_ca other-ca "unrelated test CA"
  # webpki (rustls) is strict: an end-entity must say CA:FALSE and carry SANs.
  [ -s "$DIR/server.crt" ] && [ -s "$DIR/server.key" ] || make_leaf server localhost \
"basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
authorityKeyIdentifier=keyid"
  [ -s "$DIR/client.crt" ] && [ -s "$DIR/client.key" ] || make_leaf client "$PG_USER" \
"basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid"
  chmod 0600 "$DIR"/*.key
}

# --- PostgreSQL ----------------------------------------------------------------

start_pg() {
  local pg=$DIR/pg sock=$DIR/pgsock
  if [ ! -s "$pg/PG_VERSION" ]; then
    rm -rf "$pg"
    install -d -m 0700 -o postgres -g postgres "$pg"
    as_user postgres "$PG_BIN/initdb" -D "$pg" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=reject --no-instructions >"$DIR/pg-initdb.log" 2>&1 \
      || { tail -n 20 "$DIR/pg-initdb.log" >&2; die "PostgreSQL initdb failed"; }
    # Our settings live in tls.conf, rewritten on every start.
    echo "include_if_exists = 'tls.conf'" >>"$pg/postgresql.conf"
  fi
  install -d -m 0755 -o postgres -g postgres "$sock"
  # pg_ctl opens the log as postgres, and DIR itself is not writable by it.
  touch "$DIR/pg.log" && chown postgres:postgres "$DIR/pg.log"
  install_pair postgres "$pg/tls"

  cat >"$pg/tls.conf" <<EOF
listen_addresses = '127.0.0.1,::1'
port = $PG_PORT
unix_socket_directories = '$sock'
ssl = on
ssl_cert_file = 'tls/server.crt'
ssl_key_file = 'tls/server.key'
ssl_ca_file = 'tls/ca.crt'
password_encryption = 'scram-sha-256'
# Throwaway cluster: durability is not worth the start-up/IO time.
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
EOF
  # TCP only over TLS: no plain `host` line, so sslmode=disable finds no entry.
  cat >"$pg/pg_hba.conf" <<EOF
local   all  postgres                 peer
hostssl all  all       127.0.0.1/32   scram-sha-256
hostssl all  all       ::1/128        scram-sha-256
EOF
  chown postgres:postgres "$pg/tls.conf" "$pg/pg_hba.conf"

  if as_user postgres "$PG_BIN/pg_ctl" -D "$pg" status >/dev/null 2>&1; then
    as_user postgres "$PG_BIN/pg_ctl" -D "$pg" reload >/dev/null
  else
    check_port_free PostgreSQL "$PG_PORT"
    as_user postgres "$PG_BIN/pg_ctl" -D "$pg" -l "$DIR/pg.log" -w -t "$WAIT_SECONDS" start >/dev/null \
      || { log "last lines of $DIR/pg.log:"; tail -n 25 "$DIR/pg.log" >&2; die "PostgreSQL (port $PG_PORT) did not start"; }
  fi
  wait_for "PostgreSQL (port $PG_PORT)" "$DIR/pg.log" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"

  as_user postgres psql -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$PG_PORT" -d postgres >/dev/null <<EOF
SELECT format('CREATE ROLE %I', '$PG_USER') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER')
\\gexec
ALTER ROLE $PG_USER WITH SUPERUSER LOGIN PASSWORD '$PG_PASS';
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB')
\\gexec
EOF
}

stop_pg() {
  [ -s "$DIR/pg/postmaster.pid" ] || return 0
  as_user postgres "$PG_BIN/pg_ctl" -D "$DIR/pg" -m fast -w -t "$WAIT_SECONDS" stop >/dev/null 2>&1 \
    && log "PostgreSQL stopped" || true
}

# --- Redis ---------------------------------------------------------------------

redis_ping() {
  redis-cli --no-auth-warning --tls --cacert "$DIR/ca.crt" -h 127.0.0.1 -p "$REDIS_PORT" \
    --user "$REDIS_USER" --pass "$REDIS_PASS" ping | grep -qx PONG
}

start_redis() {
  # Runs as root (the caller), so it reads DIR/server.key directly.
  mkdir -p "$DIR/redis"
  cat >"$DIR/redis.conf" <<EOF
bind 127.0.0.1 -::1
port 0
tls-port $REDIS_PORT
tls-cert-file $DIR/server.crt
tls-key-file $DIR/server.key
tls-ca-cert-file $DIR/ca.crt
tls-auth-clients optional
daemonize yes
pidfile $DIR/redis.pid
logfile $DIR/redis.log
dir $DIR/redis
save ""
appendonly no
# Authentication is required: the default user is disabled.
user default off
user $REDIS_USER on >$REDIS_PASS ~* &* +@all
EOF
  if ! live_pid "$DIR/redis.pid" redis >/dev/null; then
    check_port_free Redis "$REDIS_PORT"
    rm -f "$DIR/redis.pid"
    redis-server "$DIR/redis.conf" || die "Redis failed to launch (see $DIR/redis.log)"
  fi
  wait_for "Redis (port $REDIS_PORT)" "$DIR/redis.log" redis_ping
}

stop_redis() {
  local pid
  pid=$(live_pid "$DIR/redis.pid" redis) || return 0
  kill -TERM "$pid"
  wait_exit "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/redis.pid"
  log "Redis stopped"
}

# --- MariaDB -------------------------------------------------------------------

# mariadbd reads my.cnf (incl. the system one on port 3306) unless --no-defaults
# comes first; the same holds for mariadb-install-db and the client.
mysql_root() { mariadb --no-defaults -uroot -S "$MYSQL_RUN/mysqld.sock" "$@"; }

start_mysql() {
  local data=$DIR/mysql run=$MYSQL_RUN
  # mariadbd runs as `mysql`: everything it writes must be mysql-owned.
  install -d -m 0755 -o mysql -g mysql "$run"
  install_pair mysql "$DIR/mysql-ssl"
  touch "$DIR/mysql.log" && chown mysql:mysql "$DIR/mysql.log"
  if [ ! -d "$data/mysql" ]; then
    rm -rf "$data"
    install -d -m 0700 -o mysql -g mysql "$data"
    mariadb-install-db --no-defaults --datadir="$data" --user=mysql \
      --auth-root-authentication-method=socket --skip-test-db >"$DIR/mysql-install.log" 2>&1 \
      || { tail -n 20 "$DIR/mysql-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  if ! live_pid "$run/mysqld.pid" mariadbd >/dev/null; then
    check_port_free MariaDB "$MYSQL_PORT"
    rm -f "$run/mysqld.pid"
    # Started as root, mariadbd drops to --user=mysql itself.
    setsid mariadbd --no-defaults --user=mysql --datadir="$data" \
      --port="$MYSQL_PORT" --bind-address=127.0.0.1,::1 --skip-name-resolve \
      --socket="$run/mysqld.sock" --pid-file="$run/mysqld.pid" --log-error="$DIR/mysql.log" \
      --ssl-ca="$DIR/mysql-ssl/ca.crt" --ssl-cert="$DIR/mysql-ssl/server.crt" \
      --ssl-key="$DIR/mysql-ssl/server.key" --require-secure-transport=ON \
      --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
      --innodb-flush-log-at-trx-commit=0 --skip-innodb-doublewrite \
      </dev/null >>"$DIR/mysql.log" 2>&1 &
  fi
  # The socket counts as secure transport (even for REQUIRE SSL), so root can set
  # up over it. But mysql_async (prefer_socket, on by default) silently swaps a
  # loopback TCP session for one through @@socket, dropping TLS; a locked
  # rbtls@localhost (socket logins, under skip-name-resolve) makes that swap fail,
  # so the client stays on TCP+TLS.
  wait_for "MariaDB (port $MYSQL_PORT)" "$DIR/mysql.log" mysql_root -e 'SELECT 1'
  mysql_root <<EOF
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS $MYSQL_DB;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%';
ALTER USER '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASS' REQUIRE SSL;
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'%' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost';
ALTER USER '$MYSQL_USER'@'localhost' ACCOUNT LOCK;
EOF
  wait_for "MariaDB (port $MYSQL_PORT, TLS)" "$DIR/mysql.log" \
    mariadb --no-defaults --ssl --ssl-ca="$DIR/ca.crt" --ssl-verify-server-cert \
      -h 127.0.0.1 -P "$MYSQL_PORT" -u "$MYSQL_USER" -p"$MYSQL_PASS" -e 'SELECT 1'
}

stop_mysql() {
  local pid
  pid=$(live_pid "$MYSQL_RUN/mysqld.pid" mariadbd) || return 0
  kill -TERM "$pid" # SIGTERM is mariadbd's clean shutdown
  wait_exit "$pid" "$WAIT_SECONDS" || kill -KILL "$pid" 2>/dev/null || true
  log "MariaDB stopped"
}

# --- HTTPS ---------------------------------------------------------------------

write_https_py() {
  cat >"$DIR/https.py" <<'EOF'
# Test HTTPS endpoint for the TLS suites. argv: port cert key pidfile apikey
import json, os, socket, ssl, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, cert, key, pidfile, apikey = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
HEALTH = {"status": "ok", "error_rate": 0.12, "nested": {"accuracy": 0.93}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            if self.headers.get("apikey") == apikey:
                self.send_json(200, HEALTH)
            else:
                self.send_json(401, {"error": "unauthorized"})
        elif self.path == "/slow":
            time.sleep(3)
            self.send_json(200, {"status": "ok"})
        else:
            self.send_json(404, {"error": "not found"})

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that reject our certificate abort the handshake: one line, no traceback.
        sys.stderr.write("%s error: %s\n" % (client_address[0], sys.exc_info()[1]))


class Server6(Server):
    address_family = socket.AF_INET6


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
servers = [Server(("127.0.0.1", int(port)), Handler)]
try:
    servers.append(Server6(("::1", int(port)), Handler))
except OSError:
    pass  # no IPv6 loopback here
for s in servers:
    # Handshake lazily in the handler thread, so a silent client cannot stall accept().
    s.socket = ctx.wrap_socket(s.socket, server_side=True, do_handshake_on_connect=False)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(pidfile + ".tmp", pidfile)
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
EOF
}

https_health() {
  curl -sf --max-time 2 --cacert "$DIR/ca.crt" -H "apikey: $HTTPS_KEY" \
    "https://127.0.0.1:$HTTPS_PORT/health"
}

start_https() {
  local py
  # The system python starts faster than a pyenv shim; both have ssl.
  py=$(command -v /usr/bin/python3 || command -v python3) || die "python3 not found"
  write_https_py
  if ! live_pid "$DIR/https.pid" python >/dev/null; then
    check_port_free HTTPS "$HTTPS_PORT"
    rm -f "$DIR/https.pid"
    setsid "$py" -u "$DIR/https.py" "$HTTPS_PORT" "$DIR/server.crt" "$DIR/server.key" \
      "$DIR/https.pid" "$HTTPS_KEY" </dev/null >>"$DIR/https.log" 2>&1 &
  fi
  wait_for "HTTPS (port $HTTPS_PORT)" "$DIR/https.log" https_health
}

stop_https() {
  local pid
  pid=$(live_pid "$DIR/https.pid" python) || return 0
  kill -TERM "$pid"
  wait_exit "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/https.pid"
  log "HTTPS stopped"
}

# --- main ----------------------------------------------------------------------

write_env() {
  cat >"$DIR/env.tmp" <<EOF
export PG_TLS_PORT=$PG_PORT
export PG_TLS_URL='postgres://$PG_USER:$PG_PASS@localhost:$PG_PORT/$PG_DB'
export REDIS_TLS_PORT=$REDIS_PORT
export MYSQL_TLS_PORT=$MYSQL_PORT
export HTTPS_PORT=$HTTPS_PORT
export TLS_CA='$DIR/ca.crt'
export TLS_OTHER_CA='$DIR/other-ca.crt'
export TLS_CLIENT_CERT='$DIR/client.crt'
export TLS_CLIENT_KEY='$DIR/client.key'
# Conveniences for the same servers.
export REDIS_TLS_URL='rediss://$REDIS_USER:$REDIS_PASS@localhost:$REDIS_PORT'
export MYSQL_TLS_URL='mysql://$MYSQL_USER:$MYSQL_PASS@localhost:$MYSQL_PORT/$MYSQL_DB'
export HTTPS_URL='https://localhost:$HTTPS_PORT'
export HTTPS_APIKEY='$HTTPS_KEY'
EOF
  mv "$DIR/env.tmp" "$DIR/env"
}

case $ACTION in
  start)
    for tool in openssl redis-server redis-cli mariadbd mariadb mariadb-install-db curl runuser ss; do
      command -v "$tool" >/dev/null || die "$tool is not installed"
    done
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 binaries not found in $PG_BIN"
    # postgres and mysql need to reach their subdirectories of DIR (e.g. under a
    # 0700 mktemp dir): traversal only, listing stays closed.
    chmod o+x "$DIR"
    for u in postgres mysql; do
      as_user "$u" test -x "$DIR" \
        || die "user $u cannot reach $DIR (a parent directory is not world-traversable); use e.g. /tmp"
    done
    # Unix socket paths are limited to 107 bytes.
    [ ${#DIR} -le 70 ] || die "DIR path too long for unix sockets (${#DIR} > 70 chars): $DIR"
    make_certs
    start_pg
    start_redis
    start_mysql
    start_https
    write_env
    log "all TLS servers up; source $DIR/env"
    ;;
  stop)
    stop_https
    stop_mysql
    stop_redis
    stop_pg
    ;;
  *) usage ;;
esac
