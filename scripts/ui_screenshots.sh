#!/usr/bin/env bash
# Screenshots of the Prefect UI for the README (not part of CI): start a local server, run the
# quickstart recipe against it, serve the recipe for a moment, and take headless-Chromium
# screenshots of the run graph, the selection artifact and the deployment.
#
#   scripts/ui_screenshots.sh [OUT_DIR]      (default docs/images; needs chromium)
#
# Everything it starts lives in a temporary directory (server history included) and is stopped
# on exit; nothing of the user's own server or history is touched.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/docs/images}
PY=${PYTHON:-python3}
WIDTH=1400
HEIGHT=900
# Virtual time the page may use to fetch from the API and render (the UI is a single-page app).
BUDGET_MS=${BUDGET_MS:-25000}

TMP=$(mktemp -d -t gristmill-ui-XXXXXX)
WS=$TMP/ws
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export PREFECT_HOME=$TMP/prefect GRISTMILL_HOME=$TMP/gristmill-home
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
GRISTMILL=("$PY" -m gristmill.cli)
SERVER_PID="" SERVE_PID="" OWN_SERVER=""

CHROMIUM=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z $CHROMIUM ]]; then
    echo "error: no chromium on PATH (Debian: apt-get install -y chromium)" >&2
    exit 2
fi

stop() {  # stop PID: SIGTERM, then SIGKILL after 30 s
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 60); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    # SIGTERM: a background job of a script ignores SIGINT.
    stop "$SERVE_PID"
    if [[ $OWN_SERVER == gristmill ]]; then
        "${GRISTMILL[@]}" server stop >/dev/null 2>&1 || true
    else
        stop "$SERVER_PID"
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The API's answer to a filter query: the id of the newest object matching it.
newest_id() {  # newest_id ENDPOINT JSON_FILTER
    "$PY" - "$API/$1/filter" "$2" <<'EOF'
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),
                                 headers={"content-type": "application/json"})
found = json.load(urllib.request.urlopen(request, timeout=10))
found.sort(key=lambda item: item.get("created") or "")
print(found[-1]["id"] if found else "")
EOF
}

shoot() {  # shoot NAME URL
    "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --hide-scrollbars --window-size=$WIDTH,$HEIGHT --virtual-time-budget="$BUDGET_MS" \
        --screenshot="$OUT/$1.png" "$2" >/dev/null 2>&1
    echo "$OUT/$1.png ($(stat -c %s "$OUT/$1.png") bytes): $2"
}

# 1. A server: `gristmill server start` where this checkout has it, else Prefect's own.
if "${GRISTMILL[@]}" server --help >/dev/null 2>&1; then
    "${GRISTMILL[@]}" server start
    OWN_SERVER=gristmill
    API=$("$PY" -c 'from gristmill.server import running_api_url; print(running_api_url() or "")')
else
    PORT=$(free_port)
    # The UI asks the server where its API is: without these it would point at port 4200.
    PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$PORT \
        "$PY" -m prefect server start --host 127.0.0.1 --port "$PORT" >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    API=http://127.0.0.1:$PORT/api
fi
export PREFECT_API_URL=$API
UI=${API%/api}
for _ in $(seq 120); do
    curl -sf "$API/health" >/dev/null && break
    sleep 1
done
curl -sf "$API/health" >/dev/null || { echo "error: no Prefect API at $API" >&2; exit 1; }
echo "server: $UI"

# 2. The quickstart recipe, recorded by that server.
"${GRISTMILL[@]}" quickstart -w "$WS" >"$TMP/quickstart.log"
RUN=$(newest_id flow_runs '{"flows": {"name": {"any_": ["run-recipe"]}}}')
SELECTION=$(newest_id artifacts '{"artifacts": {"key": {"any_": ["selection-scores-clean"]}}}')
if [[ -z $SELECTION ]]; then  # a checkout whose curate flow publishes the table only
    SELECTION=$(newest_id artifacts '{"artifacts": {"key": {"any_": ["selection-clean"]}}}')
fi

# 3. The recipe served on a schedule, for as long as the deployment takes to appear.
"${GRISTMILL[@]}" serve "$WS/quickstart.yaml" --cron "0 3 * * *" -w "$WS" >"$TMP/serve.log" 2>&1 &
SERVE_PID=$!
DEPLOYMENT=""
for _ in $(seq 120); do
    DEPLOYMENT=$(newest_id deployments '{}')
    [[ -n $DEPLOYMENT ]] && break
    sleep 1
done

# The UI the server opens by default (Prefect 3.8: the v2 UI under /v2; older ones: the root).
PAGES=$UI$("$PY" - "$UI/ui-settings" <<'EOF'
import json, sys, urllib.request
settings = json.load(urllib.request.urlopen(sys.argv[1], timeout=10))
default = settings.get("default_ui")
print(settings.get(f"{default}_base_url", "").rstrip("/") if default else "")
EOF
)
mkdir -p "$OUT"
shoot run-graph "$PAGES/runs/flow-run/$RUN"
shoot selection-artifact "$PAGES/artifacts/artifact/$SELECTION"
if [[ -n $DEPLOYMENT ]]; then
    shoot deployment "$PAGES/deployments/deployment/$DEPLOYMENT"
else
    echo "warning: no deployment appeared; see the serve log:" >&2
    cat "$TMP/serve.log" >&2
fi
