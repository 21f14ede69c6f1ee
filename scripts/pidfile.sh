# Sourced by scripts/up.sh and scripts/down.sh: a pid file of make up holds "PID STARTTIME",
# the start time being field 22 of /proc/PID/stat (clock ticks after boot). A pid alone says
# nothing after a reboot or once the process is gone: the kernel hands the number to another
# process, whose process group make down would then kill.

# starttime PID: the process's start time, or nothing (and status 1) when there is no such process.
starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # the command name, in parentheses, may hold spaces
  set -- $stat       # now field 3 is $1, so field 22 is ${20}
  [ -n "${20:-}" ] && echo "${20}"
}

# write_pid FILE PID: record PID with its start time.
write_pid() { echo "$2 $(starttime "$2")" >"$1"; }

# live_pid FILE: print the recorded pid when that process is still the one recorded; otherwise
# remove FILE (saying so in one line when it named a process) and fail.
live_pid() {
  local file=$1 pid start now
  [ -f "$file" ] || return 1
  read -r pid start <"$file" || true
  if [ -n "${pid:-}" ] && [ -n "${start:-}" ] && now=$(starttime "$pid") && [ "$now" = "$start" ]; then
    echo "$pid"
    return 0
  fi
  if [ -n "${pid:-}" ] && [ -e "/proc/$pid" ]; then
    echo "co2cast: $file is stale (pid $pid is now another process, or no start time was recorded): removed, that process left alone" >&2
  fi
  rm -f "$file"
  return 1
}
