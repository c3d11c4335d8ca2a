# Sourced by the launchers: runs mpirun so that Ctrl-C or SIGTERM (what Slurm and most
# schedulers send before a kill) stops training after the current step with a checkpoint.
# mpirun itself would kill every rank on SIGINT or SIGTERM, but it forwards SIGUSR1, which
# asymml takes as "stop after this step". So mpirun runs in a session of its own (a terminal's
# Ctrl-C reaches only this script), and the first INT or TERM becomes SIGUSR1 to the job; a
# second one stops it at once. `-q` keeps Open MPI's banners off the console: every failure
# is the one `asymml: error:` line of the rank that saw it.
#
# A job whose ranks are gone ends promptly: the job's stderr passes through a watcher (line
# for line, unchanged; stdout goes through `tee`, byte for byte, progress bar included), and
# once a line starts with `asymml: error:` mpirun gets ASYMML_ERROR_GRACE_S seconds (default
# 10) to end by itself, then SIGTERM, and SIGKILL 5 s later. Across hosts whose link is cut,
# mpirun would otherwise wait for the lost host's daemon until TCP gives up (minutes).
# Open MPI's out-of-band keepalive is shortened too (idle 10 s, then 3 probes 5 s apart,
# instead of 300 s + 9 x 20 s) unless the environment sets it.
#
# with_restarts (launch --restarts N) relaunches a failed job from its last checkpoint.

launcher="${launcher:-$0}"

# Set by mpirun_graceful for the attempt it ran:
mpirun_interrupted=0  # 1: the user's INT or TERM reached this script (never restart then)
mpirun_started=0      # 1: rank 0 printed its `asymml train:` header (config, launch, run folder and resume accepted)
mpirun_error=""       # rank 0's `asymml: error:` line, or else the first one, if any

# mpirun_graceful MPIRUN_ARGS...: one run of mpirun; returns its exit status.
mpirun_graceful() {
  local tmp pid="" stopping=0 status=0 error_seen=0 error_at=0 termed=0 killed=0 kids="" t watchers w alive=0
  mpirun_interrupted=0; mpirun_started=0; mpirun_error=""
  trap 'mpirun_interrupted=1
        if [ "$stopping" = 0 ]; then stopping=1; echo "stopping after the current step (again to stop at once)" >&2; [ -z "$pid" ] || kill -USR1 "$pid" 2>/dev/null || true
        else [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true; fi' INT TERM
  trap 'error_seen=1' USR2
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/asymml-launch.XXXXXX")"
  mkfifo "$tmp/out" "$tmp/err" "$tmp/copy"
  # The watchers ignore INT and TERM: they end when mpirun's output ends (a watcher killed by
  # a signal to the whole process group would take mpirun down with a broken pipe).
  ( trap '' INT TERM HUP; exec grep -m1 '^asymml train: ' <"$tmp/copy" >"$tmp/started" ) &
  watchers=$!
  ( trap '' INT TERM HUP; exec tee -p "$tmp/copy" <"$tmp/out" ) &
  watchers="$watchers $!"
  ( trap '' INT TERM HUP; set +e
    main=$$; first=1; line=""
    while IFS= read -r line || [ -n "$line" ]; do
      # Once the launcher ends the job, Open MPI's own complaints about it are dropped.
      [ -e "$tmp/ending" ] || printf '%s\n' "$line" >&2
      case "$line" in
        "asymml: error:"*)
          # The cause: rank 0's line (the trusted rank that holds the run) or else the first.
          case "$line" in "asymml: error: rank 0:"*) printf '%s\n' "$line" >"$tmp/error0" ;; esac
          if [ "$first" = 1 ]; then first=0; printf '%s\n' "$line" >"$tmp/error"; kill -USR2 "$main" 2>/dev/null; fi ;;
      esac
    done <"$tmp/err" ) &
  watchers="$watchers $!"
  if [ "$stopping" = 0 ]; then
    OMPI_MCA_oob_tcp_keepalive_time="${OMPI_MCA_oob_tcp_keepalive_time:-10}" \
    OMPI_MCA_oob_tcp_keepalive_intvl="${OMPI_MCA_oob_tcp_keepalive_intvl:-5}" \
    OMPI_MCA_oob_tcp_keepalive_probes="${OMPI_MCA_oob_tcp_keepalive_probes:-3}" \
      setsid mpirun -q "$@" >"$tmp/out" 2>"$tmp/err" &
    pid=$!
  else
    # Interrupted before the launch: open the pipes once so that the watchers end.
    : >"$tmp/out" 2>"$tmp/err"
    status=130
  fi
  while [ -n "$pid" ]; do
    if [ "$error_seen" = 0 ]; then
      # Sleeps until mpirun ends or a signal arrives (INT/TERM: see above; USR2: an error line).
      if wait "$pid"; then status=0; else status=$?; fi
      kill -0 "$pid" 2>/dev/null || break
      continue
    fi
    [ "$error_at" != 0 ] || error_at=$SECONDS
    # (Here bash's notes on how mpirun ended, "Segmentation fault" after a TERM, go nowhere.)
    { sleep 0.5; } 2>/dev/null
    if ! kill -0 "$pid" 2>/dev/null; then
      if { wait "$pid"; } 2>/dev/null; then status=0; else status=$?; fi
      break
    fi
    t=$((SECONDS - error_at))
    if [ "$termed" = 0 ] && [ "$t" -ge "${ASYMML_ERROR_GRACE_S:-10}" ]; then
      termed=1
      echo "$launcher: the job still runs ${ASYMML_ERROR_GRACE_S:-10} s after its error line; ending it" >&2
      : >"$tmp/ending"
      { kill -TERM "$pid"; } 2>/dev/null || true
    elif [ "$termed" = 1 ] && [ "$killed" = 0 ] && [ "$t" -ge $(( ${ASYMML_ERROR_GRACE_S:-10} + 5 )) ]; then
      killed=1
      # mpirun's own children too (local ranks, the ssh to other hosts): they hold its pipes.
      kids="$(pgrep -P "$pid" 2>/dev/null || true)"
      { kill -KILL "$pid" $kids; } 2>/dev/null || true
      if { wait "$pid"; } 2>/dev/null; then status=0; else status=$?; fi
      break
    fi
  done
  trap - INT TERM USR2
  # The watchers end once mpirun's output does; anything that still holds it after 5 s more
  # (a stray child of a killed mpirun) does not keep this script waiting.
  t=$SECONDS
  while [ $((SECONDS - t)) -lt 5 ]; do
    alive=0
    for w in $watchers; do ! kill -0 "$w" 2>/dev/null || alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.1
  done
  [ "$alive" = 0 ] || kill -KILL $watchers 2>/dev/null || true
  wait $watchers 2>/dev/null || true
  [ -s "$tmp/started" ] && mpirun_started=1
  if [ -s "$tmp/error0" ]; then mpirun_error="$(head -n 1 "$tmp/error0")"
  elif [ -s "$tmp/error" ]; then mpirun_error="$(head -n 1 "$tmp/error")"; fi
  rm -rf "$tmp"
  return "$status"
}

# with_restarts RESTARTS LAUNCH: runs the launcher's function LAUNCH (one mpirun_graceful
# with the asymml arguments in the array `job_args`) and, when the job fails, relaunches it
# from its last checkpoint, up to RESTARTS times. A failure is a non-zero exit other than
# 130 (stopped with a checkpoint) without the user's INT or TERM, after rank 0 printed its
# `asymml train:` header: the config, the launch shape, the run folder and the checkpoint to
# resume from were all accepted, so what went wrong is a rank that died or fell silent, not
# a mistake that the same command would repeat. (A lost rank, `did not answer within`, is
# restarted even before the header.) A restart drops --force and adds `--resume auto`
# unless the arguments name a --resume already.
with_restarts() {
  local restarts="$1" run="$2" attempt=0 status cause a has_resume
  local -a resumed
  while :; do
    status=0
    "$run" || status=$?
    [ "$status" != 0 ] || return 0
    if [ "$mpirun_interrupted" = 1 ] || [ "$status" = 130 ] || [ "$attempt" -ge "$restarts" ]; then return "$status"; fi
    cause="${mpirun_error:-no asymml error line: a rank died}"
    case "$mpirun_error" in *" did not answer within "*) mpirun_started=1 ;; esac
    if [ "$mpirun_started" = 0 ]; then
      echo "$launcher: no restart: the job ended (exit $status) before training began, so the same command would fail again" >&2
      return "$status"
    fi
    attempt=$((attempt + 1))
    echo "$launcher: restart $attempt of $restarts after exit $status ($cause); resuming from the last checkpoint" >&2
    resumed=(); has_resume=0
    for a in "${job_args[@]}"; do
      case "$a" in
        --force) continue ;;
        --resume|--resume=*) has_resume=1 ;;
      esac
      resumed+=("$a")
    done
    [ "$has_resume" = 1 ] || resumed+=(--resume auto)
    job_args=("${resumed[@]}")
  done
}
