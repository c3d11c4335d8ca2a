#!/usr/bin/env bash
# A real cluster, MPMD form: the trusted ranks on the TEE nodes, the untrusted ranks on the
# accelerator nodes, each group from its own hostfile (docs/DESIGN.md §4).
#
#   launch/cluster.sh [--restarts N] TEE_HOSTFILE ACCEL_HOSTFILE -- train --config FILE [asymml options...]
#
# A hostfile lists one node a line with its slots, Open MPI style: `tee1 slots=1`.
# The trusted count is the number of slots in TEE_HOSTFILE, the untrusted count that of
# ACCEL_HOSTFILE; every rank is told its role with --role. asymml must be installed at the
# same path on every node (ASYMML_BIN, default: this checkout's release build), and the run
# folder must be on a file system that all trusted nodes share (checkpoints, resume).
# MPIRUN_FLAGS adds mpirun options (e.g. "--oversubscribe" to try both hostfiles on one
# machine, or "--mca btl_tcp_if_include eth0").
# --restarts N: relaunch a job that fails once training has begun (a rank or host died or
# fell silent) from its last checkpoint, up to N times (launch/mpirun-graceful.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
restarts=0
if [ "${1:-}" = --restarts ]; then restarts="${2:-}"; shift 2 || shift; fi
[ $# -ge 3 ] && [ "$3" = "--" ] || {
  echo "usage: launch/cluster.sh [--restarts N] TEE_HOSTFILE ACCEL_HOSTFILE -- train --config FILE [options]" >&2; exit 2; }
case "$restarts" in ''|*[!0-9]*) echo "launch/cluster.sh: --restarts takes a number of restarts (0 or more), not '$restarts'" >&2; exit 2 ;; esac
tee_hosts="$1"; accel_hosts="$2"; shift 3
for f in "$tee_hosts" "$accel_hosts"; do [ -r "$f" ] || { echo "launch/cluster.sh: cannot read hostfile $f" >&2; exit 1; }; done
slots() { awk '!/^#/ && NF { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, a, "="); n = a[2] } s += n } END { print s + 0 }' "$1"; }
trusted=$(slots "$tee_hosts"); untrusted=$(slots "$accel_hosts")
[ "$trusted" -ge 1 ] || { echo "launch/cluster.sh: $tee_hosts lists no slots" >&2; exit 1; }
bin="${ASYMML_BIN:-$here/.build/release/asymml}"
read -r -a mpiflags <<< "${MPIRUN_FLAGS:-}"
[ "$(id -u)" = 0 ] && mpiflags+=(--allow-run-as-root)
launcher=launch/cluster.sh
. "$here/launch/mpirun-graceful.sh"
job_args=("$@")
run_job() {
  mpirun_graceful "${mpiflags[@]}" \
    -np "$trusted" --hostfile "$tee_hosts" "$bin" "${job_args[@]}" --role trusted --set "cluster.trusted=$trusted" : \
    -np "$untrusted" --hostfile "$accel_hosts" "$bin" "${job_args[@]}" --role untrusted --set "cluster.trusted=$trusted"
}
with_restarts "$restarts" run_job
