#!/usr/bin/env bash
# One machine: T trusted + U untrusted ranks of asymml under Open MPI.
#
#   launch/local.sh [-t TRUSTED (1)] [-u UNTRUSTED (3)] [--restarts N] -- train --config FILE [asymml options...]
#
# --restarts N: relaunch a job that fails once training has begun (a rank died or fell
# silent) from its last checkpoint, up to N times (launch/mpirun-graceful.sh, with_restarts).
# Handles running as root and more ranks than cores, and gives each rank an equal share of
# the cores for OpenBLAS (train.threads), unless the command sets train.threads itself.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
trusted=1
untrusted=3
restarts=0
while [ $# -gt 0 ]; do
  case "$1" in
    -t) trusted="$2"; shift 2 ;;
    -u) untrusted="$2"; shift 2 ;;
    --restarts) restarts="${2:-}"; shift 2 || shift ;;
    --restarts=*) restarts="${1#--restarts=}"; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: launch/local.sh [-t T] [-u U] [--restarts N] -- train --config FILE [options]" >&2; exit 2; }
case "$restarts" in ''|*[!0-9]*) echo "launch/local.sh: --restarts takes a number of restarts (0 or more), not '$restarts'" >&2; exit 2 ;; esac
bin="${ASYMML_BIN:-$here/.build/release/asymml}"
[ -x "$bin" ] || { echo "launch/local.sh: $bin is missing; run 'make build' first" >&2; exit 1; }
ranks=$((trusted + untrusted))
cores=$(nproc)
threads=$(( cores / ranks )); [ "$threads" -ge 1 ] || threads=1
extra=(--set "cluster.trusted=$trusted")
case " $* " in *" train.threads="*) ;; *) extra+=(--set "train.threads=$threads") ;; esac
mpiflags=(--oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && mpiflags+=(--allow-run-as-root)
# Shared-memory transfers go through buffer copies. Open MPI's single-copy transfers (CMA)
# were faster here (vgg-cifar 1T+1U with 4 micro-batches: 87-88 samples/s against 77-84), but
# they let a rank read and write its peer's memory: with CMA a longer message than the one
# posted writes past the receive buffer (AddressSanitizer caught a hostile untrusted rank's
# count-larger and duplicate replies overflowing the trusted rank's heap), and the receiving
# process reads the sender's memory itself. ASYMML_CMA=1 turns them on where a 2-rank probe
# shows they work, for trusted benchmarks only.
if [ -z "${OMPI_MCA_btl_vader_single_copy_mechanism:-}" ]; then
  OMPI_MCA_btl_vader_single_copy_mechanism=none
  if [ "${ASYMML_CMA:-0}" = 1 ] && OMPI_MCA_btl_vader_single_copy_mechanism=cma timeout 30 mpirun "${mpiflags[@]}" -np 2 "$bin" bench --link-probe \
       --config "$here/configs/smoke.yaml" >/dev/null 2>&1; then
    OMPI_MCA_btl_vader_single_copy_mechanism=cma
  fi
fi
export OMPI_MCA_btl_vader_single_copy_mechanism
# Ranks write through pseudo-terminals; tell rank 0 whether ours is a real one (progress bar).
tty=0; [ -t 1 ] && tty=1
launcher=launch/local.sh
. "$here/launch/mpirun-graceful.sh"
job_args=("$@")
run_job() { mpirun_graceful "${mpiflags[@]}" -np "$ranks" -x OPENBLAS_NUM_THREADS="$threads" -x ASYMML_TTY="$tty" "$bin" "${job_args[@]}" "${extra[@]}"; }
with_restarts "$restarts" run_job
