#!/usr/bin/env bash
# `make bench-hosts`: a 1 trusted + 1 untrusted job across two namespaced hosts on this
# machine (scripts/netns-cluster.sh: real TCP), with the link shaped to each RATE, next to
# what `asymml plan --hardware` predicts for that link (kernel rates from
# `asymml bench --calibrate` here; the link from the shaped rate, latency as calibrated).
# Needs root and `ip`/`tc`.
#
#   scripts/bench-hosts.sh [CONFIG] [STEPS] [RATE_GBIT ...]   # defaults: vgg-cifar, 12, 1 10
#
# For each rate it prints the wall time per step, the bytes per step, the trusted rank's
# busy and waiting time, the untrusted rank's own compute time when the run reports it,
# and the prediction. Noisy on a shared machine: medians over the log windows after the first.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-configs/vgg-cifar.yaml}"; steps="${2:-12}"; shift $(( $# < 2 ? $# : 2 ))
rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(1 10)
[ "$(id -u)" = 0 ] || { echo "bench-hosts: needs root (network namespaces)" >&2; exit 1; }
bin=.build/release/asymml
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work="$(mktemp -d)"
export ASYMML_NETNS_ID="bh$$"
cleanup() { scripts/netns-cluster.sh down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
common=(--config "$config" --set train.threads=1 --set data.dataset=synthetic --set data.synthetic_test=256
        --set data.synthetic_train=$(( 64 * (steps + 4) )))

"$bin" bench --calibrate "${common[@]}" --steps 3 --output "$work/hardware.yaml" | head -1
for rate in "${rates[@]}"; do
  scripts/netns-cluster.sh up 2 --rate "${rate}gbit" >/dev/null
  scripts/netns-cluster.sh hostfile 1 > "$work/tee.hosts"
  scripts/netns-cluster.sh hostfile 2 > "$work/accel.hosts"
  MPIRUN_FLAGS="$(scripts/netns-cluster.sh mpirun-flags)" ASYMML_BIN="$PWD/$bin" \
    launch/cluster.sh "$work/tee.hosts" "$work/accel.hosts" -- train "${common[@]}" \
      --set train.max_steps="$steps" --set train.log_every=3 --run-dir "$work/run-$rate" > "$work/train-$rate.log" 2>&1 \
    || { tail -5 "$work/train-$rate.log"; exit 1; }
  # What TCP between the two hosts really gives at this shaping (the link probe, over MPI).
  cat "$work/tee.hosts" "$work/accel.hosts" > "$work/both.hosts"
  read -r -a flags <<< "$(scripts/netns-cluster.sh mpirun-flags)"
  link=$(mpirun "${flags[@]}" --allow-run-as-root -np 2 --hostfile "$work/both.hosts" "$PWD/$bin" bench --link-probe \
           "${common[@]}" 2>&1 | awk '/^link / { print $2 "," $3 }')
  scripts/netns-cluster.sh down >/dev/null
  "$bin" plan "${common[@]}" --hardware "$work/hardware.yaml,link_gbps=$rate" --json > "$work/plan-$rate.json"
  "$bin" plan "${common[@]}" --hardware "$work/hardware.yaml,link_gbps=${link%,*},link_latency_us=${link#*,}" --json \
    > "$work/plan-measured-$rate.json"
  python3 - "$work/plan-$rate.json" "$work/run-$rate/metrics.jsonl" "$rate" "$work/plan-measured-$rate.json" "$link" <<'PY'
import json, statistics, sys
plan = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(sys.argv[2])]
rows = [r for r in rows if "samples_per_s" in r and "loss" in r][1:] or rows
med = lambda k: statistics.median(r[k] for r in rows if k in r) if any(k in r for r in rows) else float("nan")
batch = plan["batch"]
wall = batch / med("samples_per_s")
p = plan["prediction"]["training"]
own = med("untrusted_compute_s")
q = json.load(open(sys.argv[4]))["prediction"]["training"]["wall_s"]["1"]
gbps, latency = (float(x) for x in sys.argv[5].split(","))
print(f"link {sys.argv[3]:>3} Gbit/s: wall {1e3*wall:7.1f} ms/step; predicted {1e3*p['wall_s']['1']:7.1f} at the shaped rate "
      f"(predicted/measured {p['wall_s']['1']/wall:.2f}), {1e3*q:7.1f} at the probed {gbps:.2f} Gbit/s, {latency:.0f} us "
      f"({q/wall:.2f}); {med('bytes_to_untrusted')/1e6:.1f} MB to the untrusted side per step; "
      f"trusted busy {1e3*med('trusted_s'):.0f} ms, waiting {1e3*med('untrusted_s'):.0f} ms "
      f"(predicted trusted {1e3*p['trusted_s']:.0f}, untrusted {1e3*p['untrusted_s']:.0f}, link {1e3*p['link_s']:.0f} ms)"
      + (f"; untrusted busy {1e3*own:.0f} ms" if own == own else ""))
PY
done
