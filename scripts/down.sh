#!/usr/bin/env bash
# `make down`: stop what `make up` started (each service's process group, by its recorded id
# and start time: a pid file whose process is gone, or whose pid now names another process, is
# removed and nothing is killed). A pid file of an older make up (the pid alone) is trusted when
# the pid runs the service's command line; when that cannot be told it is kept, and make down
# says how to stop that process by hand and fails.
set -uo pipefail
: "${CO2CAST_HOME:?run through make (make down)}"
STATE="$CO2CAST_HOME/up"
# shellcheck source=scripts/pidfile.sh
. "$(dirname "$0")/pidfile.sh"
stopped=0 kept=0
for pidfile in "$STATE"/*.pid; do
  [ -e "$pidfile" ] || continue
  name=$(basename "$pidfile" .pid)
  pid=$(live_pid "$pidfile")
  case $? in
    2) kept=$((kept + 1)); continue ;;
    0) ;;
    *) pid= ;;
  esac
  if [ -n "$pid" ]; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name (pid $pid)"
    stopped=$((stopped + 1))
  fi
  rm -f "$pidfile"
done
rm -f "$STATE/urls.txt" "$STATE/urls.env"
[ $stopped -gt 0 ] || [ $kept -gt 0 ] || echo "nothing was running"
[ $kept -eq 0 ]
