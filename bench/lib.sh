# bench/lib.sh — shared by bench/run and bench/follow. Source it; do not run it.
#
# Throwaway PostgreSQL clusters on loopback in a mktemp directory, a trap that stops them
# (and any background process group registered with track_pgid) on every exit path, CPU
# accounting for the "other CPU s" column, waiting for an idle machine, and locating the
# heroku2rds binary.
#
# The sourcing script sets, before calling anything: BENCH_NAME (log prefix), PG_MAJOR,
# PG_BIN, DB_USER, REPO. It may define bench_cleanup_hook, which the trap calls first.

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%H:%M:%S)" "$*"; }
die() { printf '[%s] ERROR: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; exit 1; }

# ------------------------------------------------------------------ packages
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ------------------------------------------------------- work dir + the trap
# bench_setup_work: creates WORK (owned by postgres), PASSWORD (exported as PGPASSWORD) and
# installs the trap. Call it once, in the main shell.
CLUSTERS=()
CUR_PID=""      # the contender being timed (its own process group)
BG_PGIDS=()     # other background process groups to stop on exit
bench_setup_work() {
    # Like mktemp -d, but all lower case: Bucardo lower-cases the paths it stores.
    local tries=0
    while :; do
        WORK="${TMPDIR:-/tmp}/h2r-${BENCH_NAME:-bench}.$(head -c 5 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        (umask 077 && mkdir -- "$WORK") 2>/dev/null && break
        tries=$((tries + 1)); [ "$tries" -lt 20 ] || die "could not create a work directory under ${TMPDIR:-/tmp}"
    done
    chown postgres:postgres "$WORK"
    chmod 700 "$WORK"
    PASSWORD="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    printf '%s\n' "$PASSWORD" >"$WORK/pwfile"
    chown postgres:postgres "$WORK/pwfile"
    chmod 600 "$WORK/pwfile"
    export PGPASSWORD="$PASSWORD"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

track_pgid() { BG_PGIDS+=("$1"); }

stop_pgid() {  # stop_pgid PGID: TERM the process group, KILL it after 5 s
    local g="$1" i
    kill -0 -- "-$g" 2>/dev/null || return 0
    kill -TERM -- "-$g" 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 -- "-$g" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -KILL -- "-$g" 2>/dev/null || true
}

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if declare -F bench_cleanup_hook >/dev/null; then
        bench_cleanup_hook || true
    fi
    if [ -n "$CUR_PID" ] && kill -0 "$CUR_PID" 2>/dev/null; then
        log "stopping running contender (process group $CUR_PID)"
        kill -TERM -- "-$CUR_PID" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$CUR_PID" 2>/dev/null || true
    fi
    local g
    for g in "${BG_PGIDS[@]}"; do stop_pgid "$g"; done
    local d
    for d in "${CLUSTERS[@]}"; do
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    if [ -n "${BENCH_LOG_DIR:-}" ] && [ -n "${WORK:-}" ]; then
        mkdir -p -- "$BENCH_LOG_DIR" && cp -- "$WORK"/*.log "$WORK"/*.time "$BENCH_LOG_DIR"/ 2>/dev/null || true
    fi
    [ -z "${WORK:-}" ] || rm -rf -- "$WORK"
    exit "$rc"
}

# ------------------------------------------------------------------ clusters
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p tries=0
    while :; do
        p=$(( 20000 + RANDOM % 30000 ))
        if ! port_in_use "$p"; then echo "$p"; return 0; fi
        tries=$((tries + 1)); [ "$tries" -lt 200 ] || die "no free TCP port found"
    done
}

# start_cluster NAME EXTRA_CONF_LINES... ; prints the port. It runs in a command
# substitution (a subshell): add "$WORK/NAME" to CLUSTERS before calling it.
start_cluster() {
    local name="$1"; shift
    local dir="$WORK/$name" port
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir" -U "$DB_USER" --pwfile="$WORK/pwfile" \
        --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$WORK/$name.initdb.log" 2>&1 \
        || { cat "$WORK/$name.initdb.log" >&2; die "initdb $name failed"; }
    port="$(free_port)"
    {
        echo "# bench settings"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$WORK'"
        echo "max_connections = 100"
        echo "shared_buffers = 512MB"
        echo "maintenance_work_mem = 256MB"
        echo "max_wal_size = 4GB"
        echo "checkpoint_timeout = 15min"
        echo "fsync = on"
        echo "full_page_writes = on"
        local line
        for line in "$@"; do echo "$line"; done
    } >>"$dir/postgresql.conf"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -l "$WORK/$name.server.log" -w -t 120 start >/dev/null \
        || { tail -n 30 "$WORK/$name.server.log" >&2; die "could not start $name cluster"; }
    echo "$port"
}

url() { printf 'postgresql://%s:%s@127.0.0.1:%s/%s?sslmode=disable' "$DB_USER" "$PASSWORD" "$1" "$2"; }
q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

# ------------------------------------------------------------ CPU accounting
# Other work on the machine skews the numbers, so measure it.
HZ="$(getconf CLK_TCK)"
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# Busy time of processes only (user, nice, system, steal): interrupt and softirq time is left
# out of "other CPU s", since loopback traffic between the clients and the clusters shows up
# there and belongs to no process.
proc_busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $9 }' /proc/stat; }
cpu_busy() {  # percent of all CPUs busy over one second
    local a b idle_a idle_b
    a="$(busy_jiffies)"; idle_a="$(awk '/^cpu / { print $5 + $6 }' /proc/stat)"
    sleep 1
    b="$(busy_jiffies)"; idle_b="$(awk '/^cpu / { print $5 + $6 }' /proc/stat)"
    awk -v b="$((b - a))" -v i="$((idle_b - idle_a))" 'BEGIN { printf "%.0f", (b + i > 0) ? 100 * b / (b + i) : 0 }'
}
cluster_jiffies() {  # CPU used so far by every cluster in CLUSTERS: postmasters, children, reaped backends
    local d pm p total=0 j
    for d in "${CLUSTERS[@]}"; do
        pm="$(head -n 1 "$d/postmaster.pid" 2>/dev/null)" || continue
        for p in "$pm" $(ps -o pid= --ppid "$pm" 2>/dev/null); do
            j="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }')" || continue
            total=$((total + ${j:-0}))
        done
    done
    echo "$total"
}
pgid_jiffies() {  # pgid_jiffies PGID...: CPU used so far by those process groups' live processes and reaped children
    local g p j total=0
    for g in "$@"; do
        [ -n "$g" ] || continue
        for p in $(ps -o pid= -g "$g" 2>/dev/null); do
            j="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }')" || continue
            total=$((total + ${j:-0}))
        done
    done
    echo "$total"
}
# Before a measurement, wait (up to IDLE_WAIT s) until the machine is idle.
wait_for_idle() {
    local waited=0 busy
    busy="$(cpu_busy)"
    while [ "$busy" -ge "$IDLE_MAX_BUSY" ] && [ "$waited" -lt "$IDLE_WAIT" ]; do
        [ "$waited" -eq 0 ] && log "machine is ${busy}% busy; waiting up to ${IDLE_WAIT}s for it to drop below ${IDLE_MAX_BUSY}%"
        sleep 4; waited=$((waited + 5))
        busy="$(cpu_busy)"
    done
    [ "$busy" -lt "$IDLE_MAX_BUSY" ] || log "WARNING: still ${busy}% busy after ${IDLE_WAIT}s; measuring anyway"
    echo "$busy" >"$WORK/busy"
}

# ---------------------------------------------------------------- heroku2rds
# find_h2r: sets H2R_BIN to the binary to measure (H2R, or $CARGO_TARGET_DIR/release/heroku2rds
# with CARGO_TARGET_DIR defaulting to ~/.cache/heroku2rds-target as in scripts/test, building it when missing), and
# H2R_BUILT to a description of it. Returns 1 (with H2R_SKIP_WHY set) when there is none.
find_h2r() {
    local h2r="${H2R:-}"
    H2R_BIN=""; H2R_SKIP_WHY=""
    if [ -z "$h2r" ]; then
        local tdir="${CARGO_TARGET_DIR:-$HOME/.cache/heroku2rds-target}"
        case "$tdir" in /*) ;; *) tdir="$REPO/$tdir" ;; esac
        h2r="$tdir/release/heroku2rds"
        if [ ! -x "$h2r" ]; then
            log "building heroku2rds: cargo build --release (log in work dir)"
            if ! (cd "$REPO" && CARGO_TARGET_DIR="$tdir" cargo build --release) >"$WORK/cargo.log" 2>&1; then
                H2R_SKIP_WHY="cargo build --release failed"
                log "cargo build --release failed; last lines:"
                tail -n 15 "$WORK/cargo.log" | sed 's/^/    | /'
                return 1
            fi
        fi
    else
        case "$h2r" in /*) ;; *) h2r="$PWD/$h2r" ;; esac
    fi
    if [ -x "$h2r" ] && [ -z "${H2R:-}" ] \
        && [ -n "$(find "$REPO/src" "$REPO/Cargo.toml" "$REPO/Cargo.lock" -newer "$h2r" -print -quit 2>/dev/null)" ]; then
        log "WARNING: $h2r is older than the sources; run cargo build --release to measure the current code"
    fi
    if [ ! -x "$h2r" ]; then
        H2R_SKIP_WHY="no executable at $h2r"
        return 1
    fi
    H2R_BIN="$h2r"
    H2R_BUILT="binary built $(date -u -r "$h2r" '+%Y-%m-%d %H:%M UTC')"
}

# ------------------------------------------- CPU of the measurement window
# cpu_mark / cpu_other bracket a measurement and give the CPU seconds that processes outside
# the benchmark used meanwhile: machine busy time of processes, minus the clusters, minus this script's
# reaped children (bash `times`), minus the live process trees listed in CPU_TRACK (pids of
# background helpers such as a follower or a daemon; their descendants count too).
# Call both directly, never inside $(...): `times` must run in the main shell.
CPU_TRACK=()
tree_jiffies() {  # tree_jiffies PID...: CPU of those processes and all their descendants (live + reaped)
    local total=0 p j kids
    local -a todo=("$@")
    while [ "${#todo[@]}" -gt 0 ]; do
        p="${todo[0]}"; todo=("${todo[@]:1}")
        [ -n "$p" ] || continue
        j="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }')" || j=0
        total=$((total + ${j:-0}))
        kids="$(ps -o pid= --ppid "$p" 2>/dev/null || true)"
        # shellcheck disable=SC2206 # word splitting wanted
        [ -z "$kids" ] || todo+=($kids)
    done
    echo "$total"
}
children_seconds() {  # the second line of `times` (reaped children's user and sys), in seconds
    awk 'NR == 2 {
        n = split($0, f, " "); s = 0
        for (i = 1; i <= n; i++) { m = f[i]; sub(/s$/, "", m); split(m, p, "m"); s += p[1] * 60 + p[2] }
        printf "%.2f", s }' "$1"
}
cpu_mark() {
    times >"$WORK/times.mark"
    M_BUSY="$(proc_busy_jiffies)"; M_CL="$(cluster_jiffies)"
    M_BG="$( [ "${#CPU_TRACK[@]}" -gt 0 ] && tree_jiffies "${CPU_TRACK[@]}" || echo 0)"
    M_OWN="$(children_seconds "$WORK/times.mark")"
}
cpu_other() {  # sets CPU_OTHER (seconds, one decimal) for the window since cpu_mark
    local busy cl bg own
    busy="$(proc_busy_jiffies)"; cl="$(cluster_jiffies)"
    bg="$( [ "${#CPU_TRACK[@]}" -gt 0 ] && tree_jiffies "${CPU_TRACK[@]}" || echo 0)"
    times >"$WORK/times.end"
    own="$(children_seconds "$WORK/times.end")"
    CPU_OTHER="$(awk -v j="$((busy - M_BUSY))" -v c="$((cl - M_CL))" -v b="$((bg - M_BG))" -v hz="$HZ" \
        -v o1="$M_OWN" -v o2="$own" \
        'BEGIN { o = (j - c - b) / hz - (o2 - o1); if (o < 0) o = 0; printf "%.1f", o }')"
}
