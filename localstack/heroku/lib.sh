# Shared by localstack/heroku/start, stop and test (sourced, not run). Paths and ports only.

FAKE_HEROKU_HOST=127.0.0.1
FAKE_HEROKU_PORT="${FAKE_HEROKU_PORT:-4567}"
FAKE_HEROKU_PUBLIC_PORT="${FAKE_HEROKU_PUBLIC_PORT:-$((FAKE_HEROKU_PORT + 1))}"
for _p in "$FAKE_HEROKU_PORT" "$FAKE_HEROKU_PUBLIC_PORT"; do
  case "$_p" in
    '' | *[!0-9]*) echo "FAKE_HEROKU_PORT/FAKE_HEROKU_PUBLIC_PORT must be port numbers" >&2; exit 2 ;;
  esac
done
FAKE_HEROKU_URL="http://$FAKE_HEROKU_HOST:$FAKE_HEROKU_PORT"
# The token the fake accepts out of the box (it is not a secret: it only opens the fake).
FAKE_HEROKU_TOKEN="${FAKE_HEROKU_TOKEN:-fake-heroku-token-0000-0000-000000000000}"
export FAKE_HEROKU_TOKEN

FAKE_HEROKU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FAKE_HEROKU_PYTHON="${FAKE_HEROKU_PYTHON:-python3}"
# One pid file and one log per port, so tests may run their own server beside the default one.
FAKE_HEROKU_STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/heroku2rds/fake-heroku"
FAKE_HEROKU_PID_FILE="$FAKE_HEROKU_STATE_DIR/fake-heroku-$FAKE_HEROKU_PORT.pid"
FAKE_HEROKU_LOG="$FAKE_HEROKU_STATE_DIR/fake-heroku-$FAKE_HEROKU_PORT.log"
# The test venv (jsonschema, pytest) and the pinned Heroku CLI live in the cache, not the repo.
FAKE_HEROKU_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/heroku2rds"
FAKE_HEROKU_VENV="${HEROKU2RDS_FAKE_HEROKU_VENV:-$FAKE_HEROKU_CACHE/fake-heroku-venv}"

fh_say() { echo "fake-heroku: $*" >&2; }

# Prints the pid from the pid file if that process is alive and is the fake.
fake_heroku_pid() {
  local pid
  [ -f "$FAKE_HEROKU_PID_FILE" ] || return 1
  pid="$(cat "$FAKE_HEROKU_PID_FILE" 2>/dev/null)" || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  # `-m fake_heroku`; `fake_heroku.py` is a fake started before it became a package.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE '(-m fake_heroku|fake_heroku\.py) ' ||
    return 1
  echo "$pid"
}

# True when a fake Heroku answers on the port.
fake_heroku_probe() {
  "$FAKE_HEROKU_PYTHON" - "$FAKE_HEROKU_URL" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/__fake/health", timeout=2) as r:
        sys.exit(0 if json.load(r).get("fake") == "heroku" else 1)
except Exception:
    sys.exit(1)
PY
}

fake_heroku_exports() {
  cat <<EOT
export HEROKU_API_URL=$FAKE_HEROKU_URL
export HEROKU_DATA_API_URL=$FAKE_HEROKU_URL
export HEROKU_API_KEY=$FAKE_HEROKU_TOKEN
export HEROKU_HOST=$FAKE_HEROKU_URL
export HEROKU_DATA_HOST=$FAKE_HEROKU_HOST
export HEROKU_FAKE_ADMIN_URL=$FAKE_HEROKU_URL/__fake
EOT
}
