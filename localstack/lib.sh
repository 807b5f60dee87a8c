# Shared by localstack/start, stop and smoke (sourced, not run). Paths and the port only.

MOTO_HOST=127.0.0.1
MOTO_PORT="${MOTO_PORT:-4566}"
case "$MOTO_PORT" in
  '' | *[!0-9]*) echo "MOTO_PORT must be a port number, got '$MOTO_PORT'" >&2; exit 2 ;;
esac
MOTO_URL="http://$MOTO_HOST:$MOTO_PORT"

LOCALSTACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The venv lives outside the repository and is shared by every port and clone on the machine.
MOTO_VENV="${HEROKU2RDS_MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/heroku2rds/moto-venv}"
# One pid file and one log per port, so tests may run their own server beside the default one.
MOTO_STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/heroku2rds/moto"
MOTO_PID_FILE="$MOTO_STATE_DIR/moto-$MOTO_PORT.pid"
MOTO_LOG="$MOTO_STATE_DIR/moto-$MOTO_PORT.log"

say() { echo "localstack: $*" >&2; }

# Prints the pid from the pid file if that process is alive and is our launcher.
moto_pid() {
  local pid
  [ -f "$MOTO_PID_FILE" ] || return 1
  pid="$(cat "$MOTO_PID_FILE" 2>/dev/null)" || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'moto_server\.py' || return 1
  echo "$pid"
}
