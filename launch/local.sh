#!/usr/bin/env bash
# One machine: T trusted + U untrusted ranks of asymml under Open MPI.
#
#   launch/local.sh [-t TRUSTED] [-u UNTRUSTED] -- train --config FILE [asymml options...]
#
# Handles running as root and more ranks than cores, and gives each rank an equal share of
# the cores for OpenBLAS (train.threads), unless the command sets train.threads itself.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
trusted=1
untrusted=1
while [ $# -gt 0 ]; do
  case "$1" in
    -t) trusted="$2"; shift 2 ;;
    -u) untrusted="$2"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: launch/local.sh [-t T] [-u U] -- train --config FILE [options]" >&2; exit 2; }
bin="${ASYMML_BIN:-$here/.build/release/asymml}"
[ -x "$bin" ] || { echo "launch/local.sh: $bin is missing; run 'make build' first" >&2; exit 1; }
ranks=$((trusted + untrusted))
cores=$(nproc)
threads=$(( cores / ranks )); [ "$threads" -ge 1 ] || threads=1
extra=(--set "cluster.trusted=$trusted")
case " $* " in *" train.threads="*) ;; *) extra+=(--set "train.threads=$threads") ;; esac
mpiflags=(--oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && mpiflags+=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"  # containers often forbid CMA
# Ranks write through pseudo-terminals; tell rank 0 whether ours is a real one (progress bar).
tty=0; [ -t 1 ] && tty=1
exec mpirun "${mpiflags[@]}" -np "$ranks" -x OPENBLAS_NUM_THREADS="$threads" -x ASYMML_TTY="$tty" "$bin" "$@" "${extra[@]}"
