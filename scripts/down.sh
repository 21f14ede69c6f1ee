#!/usr/bin/env bash
# `make down`: stop what `make up` started (each service's process group, by its recorded id).
set -uo pipefail
: "${CO2CAST_HOME:?run through make (make down)}"
STATE="$CO2CAST_HOME/up"
stopped=0
for pidfile in "$STATE"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  name=$(basename "$pidfile" .pid)
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name (pid $pid)"
    stopped=$((stopped + 1))
  fi
  rm -f "$pidfile"
done
rm -f "$STATE/urls.txt" "$STATE/urls.env"
[ $stopped -gt 0 ] || echo "nothing was running"
