# Sourced by the launchers: runs mpirun so that Ctrl-C or SIGTERM (what Slurm and most
# schedulers send before a kill) stops training after the current step with a checkpoint.
# mpirun itself would kill every rank on SIGINT or SIGTERM, but it forwards SIGUSR1, which
# asymml takes as "stop after this step". So mpirun runs in a session of its own (a terminal's
# Ctrl-C reaches only this script), and the first INT or TERM becomes SIGUSR1 to the job; a
# second one stops it at once. `-q` keeps Open MPI's banners off the console: every failure
# is the one `asymml: error:` line of the rank that saw it.
mpirun_graceful() {
  setsid mpirun -q "$@" &
  local pid=$! stopping=0 status=0
  trap 'if [ "$stopping" = 0 ]; then stopping=1; echo "stopping after the current step (again to stop at once)" >&2; kill -USR1 "$pid" 2>/dev/null; else kill -TERM "$pid" 2>/dev/null; fi' INT TERM
  while :; do
    if wait "$pid"; then status=0; else status=$?; fi
    kill -0 "$pid" 2>/dev/null || break
  done
  trap - INT TERM
  return "$status"
}
