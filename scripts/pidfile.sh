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

# service_cmdline PID NAME: whether PID's command line is the one make up starts for NAME:
# status 0 it is (`.../mlflow server ...`, `.../airflow scheduler ...`; the api-server retitles
# itself `airflow api_server -- ...`), 1 it is another program, 2 unsure (no command line to read,
# or the program but another command, e.g. someone else's `airflow celery worker`).
service_cmdline() {
  local pid=$1 name=$2 program command cmdline word seen_program=0 seen_command=0
  case $name in
    mlflow) program=mlflow command=server ;;
    airflow-*) program=airflow command=${name#airflow-} ;;
    *) return 2 ;;
  esac
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 2
  [ -n "${cmdline// /}" ] || return 2
  for word in $cmdline; do
    [ "${word##*/}" = "$program" ] && seen_program=1
    [ "${word//_/-}" = "$command" ] && seen_command=1
  done
  [ $seen_program = 1 ] || return 1
  [ $seen_command = 1 ] || return 2
  return 0
}

# live_pid FILE: print the recorded pid when that process is still the one recorded; otherwise
# remove FILE (saying so in one line when it named a process) and fail (status 1).
# A file written by an older make up holds the pid alone: its process is taken for the service
# when it runs (not a zombie) and its command line is the service's; when that cannot be told,
# FILE is kept, the way to stop the process by hand is printed, and the status is 2.
live_pid() {
  local file=$1 pid start now state name
  [ -f "$file" ] || return 1
  read -r pid start <"$file" || true
  if [ -n "${pid:-}" ] && [ -n "${start:-}" ] && now=$(starttime "$pid") && [ "$now" = "$start" ]; then
    echo "$pid"
    return 0
  fi
  if [ -n "${pid:-}" ] && [ -z "${start:-}" ] && [[ $pid =~ ^[0-9]+$ ]] && state=$(cat "/proc/$pid/stat" 2>/dev/null); then
    state=${state##*) }
    if [ "${state%% *}" != Z ]; then
      name=$(basename "$file" .pid)
      service_cmdline "$pid" "$name"
      case $? in
        0)
          echo "$pid"
          return 0
          ;;
        2)
          echo "co2cast: $file (from an older make up, no start time) names pid $pid, which may still be $name: kept." \
            "Check with 'ps -o pid,lstart,args -p $pid'; stop it with 'kill -TERM -- -$pid', or remove $file if it is not co2cast's" >&2
          return 2
          ;;
      esac
    fi
  fi
  if [ -n "${pid:-}" ] && [ -e "/proc/$pid" ]; then
    echo "co2cast: $file is stale (pid $pid is now another process): removed, that process left alone" >&2
  fi
  rm -f "$file"
  return 1
}
