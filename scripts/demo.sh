#!/usr/bin/env bash
# See edgemeter work on a fresh machine with no camera: the simulated odometer is read
# by the drum classifier and published to a Mosquitto broker on 127.0.0.1:1883; the readings
# scroll by as MQTT messages. Ctrl-C stops it. DEMO_SECONDS=N stops it after N seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/deps.sh"
VENV="${EDGEMETER_VENV:-$ROOT/.venv}"

pids=()
# Stop in reverse order: the daemon first, so it can still tell the broker it is offline.
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

# Debian starts mosquitto as a service on install; where nothing listens (a container,
# a machine without systemd), start one bound to loopback only.
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  conf="$(mktemp -d)/mosquitto.conf"
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' >"$conf"
  if [ "$(id -u)" -eq 0 ]; then echo "user root" >>"$conf"; fi
  /usr/sbin/mosquitto -c "$conf" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.1; done
fi

mosquitto_sub -h 127.0.0.1 -p 1883 -v -t 'edgemeter/#' &
pids+=($!)
"$VENV/bin/edgemeter" run &
pids+=($!)
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait "${pids[-1]}"; fi
