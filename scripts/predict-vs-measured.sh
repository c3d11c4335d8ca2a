#!/usr/bin/env bash
# Checks `asymml plan --hardware` against a real run on this machine: calibrates the
# kernel classes and the MPI link (`asymml bench --calibrate`), predicts the wall time of a
# training step, runs that job (one thread per rank, synthetic data of the config's shape)
# and prints both: the unprotected split (asym.mask: off, no checks) on 1 trusted + 1
# untrusted rank, or with --private the config's private setting (spread masking, checks)
# on 1 trusted + 3 untrusted ranks.
#
#   scripts/predict-vs-measured.sh CONFIG [STEPS] [--private] [--set KEY=VALUE ...]
#
# Extra --set options go to the calibration, the plan and the run alike (e.g.
# --set asym.basis=batch; --set asym.microbatches=K compares with the prediction for K). Timings on a shared machine are noisy: the measured figure is
# the median over the log windows after the first.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:?usage: scripts/predict-vs-measured.sh CONFIG [STEPS] [--set KEY=VALUE ...]}"; shift
steps=24
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then steps="$1"; shift; fi
setting=(--set asym.mask=off --set asym.verify=false); untrusted=1; label="1T+1U unprotected"
if [ $# -gt 0 ] && [ "$1" = --private ]; then setting=(); untrusted=3; label="1T+3U private"; shift; fi
bin=.build/release/asymml
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
common=(--config "$config" --set train.threads=1 "${setting[@]}" "$@")

"$bin" bench --calibrate "${common[@]}" --steps 4 --output "$work/hardware.yaml" | head -1
"$bin" plan "${common[@]}" --hardware "$work/hardware.yaml" --json > "$work/plan.json"
launch/local.sh -t 1 -u "$untrusted" -- train "${common[@]}" --set data.dataset=synthetic \
  --set data.synthetic_test=256 --set train.max_steps="$steps" --set train.log_every=4 \
  --run-dir "$work/run" > "$work/train.log" 2>&1 || { tail -5 "$work/train.log"; exit 1; }
k=1
for a in "$@"; do [[ "$a" =~ ^asym\.microbatches=([0-9]+)$ ]] && k="${BASH_REMATCH[1]}"; done
python3 - "$work/plan.json" "$work/run/metrics.jsonl" "$config" "$k" "$label" <<'PY'
import json, statistics, sys
plan = json.load(open(sys.argv[1]))
rates = [json.loads(l)["samples_per_s"] for l in open(sys.argv[2]) if '"samples_per_s"' in l and '"loss"' in l]
measured = plan["batch"] / statistics.median(rates[1:] or rates)
p = plan["prediction"]["training"]
k = sys.argv[4]
predicted = p["wall_s"].get(k)
if predicted is None: sys.exit(f"plan predicts micro-batch counts {list(p['wall_s'])}, not {k}")
busy = statistics.median(json.loads(l)["untrusted_compute_s"] for l in open(sys.argv[2]) if '"untrusted_compute_s"' in l)
print(f"{sys.argv[3]}: {sys.argv[5]} training step, {k} micro-batches, predicted {1e3*predicted:.1f} ms (trusted {1e3*p['trusted_s']:.1f}, "
      f"untrusted {1e3*p['untrusted_s']:.1f}, link {1e3*p['link_s']:.1f}), measured {1e3*measured:.1f} ms "
      f"(median of {max(1, len(rates) - 1)} windows; untrusted rank busy {1e3*busy:.1f} ms): predicted/measured {predicted/measured:.2f}")
PY
