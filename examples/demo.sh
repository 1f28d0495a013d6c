#!/usr/bin/env bash
# `make demo`: the whole flow on this machine, end to end — a Sippy simulator, the service on
# SQLite under var/demo/, an SMS sent yesterday, yesterday's billing cycle, the invoice charged
# in the simulator — then where to look. Ctrl-C stops both processes (by their PIDs).
# DEMO_EXIT=1 stops them right after the summary (the smoke test does).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
SIM_PORT=${SIM_PORT:-8090}
BASE="http://127.0.0.1:$PORT"
WORK=var/demo
rm -rf "$WORK" && mkdir -p "$WORK"

export DATABASE_URL="sqlite:///$WORK/smsledger.db" LOG_FORMAT=text
export SIPPY_URL="http://127.0.0.1:$SIM_PORT/xmlapi/xmlapi" SIPPY_USERNAME=smsledger SIPPY_PASSWORD=secret
export CRON_SECRET=demo-cron-secret USER_TOKEN_SECRET=demo-user-token-secret-of-32-bytes
export SECRET_KEY=demo-cookie-signing-key

pids=()
stop() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

wait_for() {  # URL: up to 30 s
  for _ in $(seq 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not answering: $1" >&2; exit 1
}

"$BIN/smsledger" sippy-sim --port "$SIM_PORT" >"$WORK/sippy-sim.log" 2>&1 &
pids+=($!)
"$BIN/smsledger" db upgrade >/dev/null
ADMIN=$("$BIN/smsledger" keys create --role admin --name demo-admin 2>/dev/null)
SERVICE=$("$BIN/smsledger" keys create --role service --name demo-service 2>/dev/null)
"$BIN/smsledger" rates import examples/rates.csv
"$BIN/smsledger" serve --port "$PORT" >"$WORK/serve.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$SIM_PORT/_sim/accounts"
wait_for "$BASE/healthz"

YESTERDAY=$(date -u -d yesterday +%Y-%m-%dT12:00:00Z)
api() { curl -fsS -H "Content-Type: application/json" "$@"; }
api -H "Authorization: Bearer $SERVICE" -d '{"events": [
  {"message_id": "demo-1", "user_id": "42", "destination": "+447400123456", "segments": 1, "sent_at": "'"$YESTERDAY"'"},
  {"message_id": "demo-2", "user_id": "42", "destination": "+4915123456789", "segments": 2, "sent_at": "'"$YESTERDAY"'"}]}' \
  "$BASE/api/usage" >/dev/null
api -X PATCH -H "Authorization: Bearer $ADMIN" -d '{"sippy_account_id": "1001"}' \
  "$BASE/api/admin/customers/42" >/dev/null
echo "billing cycle: $(api -X POST -H "Authorization: Bearer $CRON_SECRET" "$BASE/api/cron/process-sms-billing?type=daily")"

status=""
for _ in $(seq 100); do  # the charge runs in process, right after the cycle
  status=$(api -H "Authorization: Bearer $ADMIN" "$BASE/api/admin/sms/billing?userId=42" |
    "$BIN/python" -c 'import json, sys; items = json.load(sys.stdin)["items"]; print(items[0]["status"] if items else "none")')
  [ "$status" = paid ] && break
  sleep 0.1
done
echo "invoice of user 42: $status"
echo "Sippy's side: $(curl -fsS "http://127.0.0.1:$SIM_PORT/_sim/payments?i_account=1001")"
TOKEN=$("$BIN/smsledger" token --user-id 42)
cat <<TEXT

Billing Management:  $BASE/admin/sms   (sign in with the admin key: $ADMIN)
User 42's widget:    $BASE/widget/billing?token=$TOKEN
API documentation:   $BASE/docs
Logs:                $WORK/serve.log, $WORK/sippy-sim.log
TEXT
if [ "${DEMO_EXIT:-}" = 1 ]; then exit 0; fi
echo "Ctrl-C stops the simulator and the service."
wait
