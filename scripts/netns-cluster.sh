#!/usr/bin/env bash
# A cluster of "hosts" on this machine: Linux network namespaces on a bridge, for
# multi-host tests of launch/cluster.sh (real TCP between ranks, links that can be
# shaped or cut). Needs root, `ip`, `unshare` and (for --rate) `tc`.
#
#   scripts/netns-cluster.sh up N [--rate RATE] [--tcp-retries2 K]  # RATE e.g. 1gbit (tbf, both ends)
#   scripts/netns-cluster.sh hosts                    # "NAME ADDRESS NAMESPACE" per host
#   scripts/netns-cluster.sh hostfile H... [--slots S] # Open MPI hostfile lines (addresses)
#   scripts/netns-cluster.sh mpirun-flags             # mpirun options for this cluster (MPIRUN_FLAGS)
#   scripts/netns-cluster.sh exec H CMD...            # run CMD on host H
#   scripts/netns-cluster.sh rsh-agent H CMD...       # what Open MPI's plm_rsh_agent calls
#   scripts/netns-cluster.sh cut H | heal H           # take host H's link down / up again
#   scripts/netns-cluster.sh down                     # kill what runs in the hosts, remove everything
#
# H is a host's number (1..N), its name (h1), its address or its namespace's name.
#
# Each run has an id: ASYMML_NETNS_ID (1-9 letters or digits; `up` defaults to its process
# id and prints it). Every later command needs the same ASYMML_NETNS_ID, which names the
# namespaces (asym-ID-h1...), the bridge (asb-ID), the links (asvIDhK, root side) and the state folder
# ${TMPDIR:-/tmp}/asymml-netns-ID: `env` (sourceable), `hosts`, `hostfile`, `rsh-agent`.
# Parallel runs with different ids do not collide.
#
# Addresses: one /24 per run, ASYMML_NETNS_SUBNET (e.g. 10.213.7 or 10.213.7.0/24); by
# default the first 10.213.K.0/24 that no address or route on this machine uses. Host K
# gets .K, the bridge gets .254 in the root namespace, so mpirun can run here and reach the
# orted daemons in the hosts. Each host has its own hostname (its namespace's name, in a UTS
# namespace of the commands started there); the file system is shared.
#
# --tcp-retries2 K sets net.ipv4.tcp_retries2 in the hosts (only there): how many times TCP
# retransmits before it gives up on a peer (Linux default 15: ~15 min; 4: ~6 s). mpirun
# waits for every orted to confirm the end of a job, so after a host vanishes it hangs that
# long, unless it runs in a host with a small K (`exec 1 launch/cluster.sh ...`; with K = 4
# it ended ~11 s after the last rank).
#
# Nothing persistent: `down` (e.g. `trap '... down' EXIT`) removes the namespaces, the
# bridge, the links and the state folder; a reboot does too.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

die() { echo "netns-cluster: $*" >&2; exit 1; }
usage() { sed -n '6,16p' "$self" | sed 's/^# \{0,1\}//' >&2; exit 2; }

run_id() {
  local id="${ASYMML_NETNS_ID:-}"
  [ -n "$id" ] || die "ASYMML_NETNS_ID is not set (use the id that 'up' printed)"
  [[ "$id" =~ ^[A-Za-z0-9]{1,9}$ ]] || die "ASYMML_NETNS_ID must be 1-9 letters or digits: '$id'"
  echo "$id"
}
state_dir() { echo "${TMPDIR:-/tmp}/asymml-netns-$1"; }

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
  command -v ip >/dev/null || die "needs 'ip' (apt-get install iproute2)"
}

# Loads the state of run $ASYMML_NETNS_ID: ID, SUBNET, BRIDGE, N and the host table.
load() {
  ID="$(run_id)"; STATE="$(state_dir "$ID")"
  [ -r "$STATE/env" ] || die "no cluster with id $ID ($STATE/env missing; run 'up' first)"
  # shellcheck disable=SC1091
  . "$STATE/env"
}

# host_field H COLUMN: the host table is "NAME ADDRESS NAMESPACE VETH" per line.
host_line() {
  local h="$1"
  [[ "$h" =~ ^[0-9]+$ ]] && h="h$h"
  awk -v h="$h" '$1 == h || $2 == h || $3 == h { print; found = 1; exit } END { exit !found }' "$STATE/hosts" \
    || die "no host '$1' in cluster $ID (hosts: $(awk '{printf "%s ", $1}' "$STATE/hosts"))"
}
host_field() { host_line "$1" | awk -v c="$2" '{ print $c }'; }

# The third octet of a free 10.213.K.0/24 (or of ASYMML_NETNS_SUBNET, checked): free means
# no address or route here names it and it is routed like any outside address (default).
pick_subnet() {
  local used; used="$( (ip -4 -o addr show; ip -4 route show table all) 2>/dev/null)"
  local default; default="$(ip -4 route show default 2>/dev/null | head -1 | grep -oE '(via [^ ]+ )?dev [^ ]+' || true)"
  free() {
    grep -qE "(^|[^0-9])${1//./\\.}\.[0-9]" <<<"$used" && return 1
    local r; r="$(ip -4 route get "$1.1" 2>/dev/null | head -1 | grep -oE '(via [^ ]+ )?dev [^ ]+' || true)"
    [ -z "$r" ] || [ "$r" = "$default" ]
  }
  if [ -n "${ASYMML_NETNS_SUBNET:-}" ]; then
    local s="${ASYMML_NETNS_SUBNET%/24}"; [[ "$s" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.0$ ]] && s="${s%.0}"
    [[ "$s" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "ASYMML_NETNS_SUBNET: give a /24 as A.B.C or A.B.C.0/24, not '$ASYMML_NETNS_SUBNET'"
    free "$s" || die "subnet $s.0/24 is already in use on this machine"
    echo "$s"; return
  fi
  local k
  for k in $(seq 0 255); do free "10.213.$k" && { echo "10.213.$k"; return; }; done
  die "no free 10.213.K.0/24 left; set ASYMML_NETNS_SUBNET"
}

shape() {  # shape DEV [NAMESPACE]: --rate as a token bucket on that end of a link
  [ -n "$RATE" ] || return 0
  if [ -n "${2:-}" ]; then ip netns exec "$2" tc qdisc add dev "$1" root tbf rate "$RATE" burst 256kb latency 50ms
  else tc qdisc add dev "$1" root tbf rate "$RATE" burst 256kb latency 50ms; fi
}

cmd_up() {
  need_root
  local n="${1:-}"; shift || true
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 99 ] || die "up: give the number of hosts (1-99)"
  RATE=""; RETRIES=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --rate) RATE="${2:?--rate needs a value, e.g. 1gbit}"; shift 2 ;;
      --tcp-retries2) RETRIES="${2:?--tcp-retries2 needs a number}"; shift 2
        [[ "$RETRIES" =~ ^[0-9]+$ ]] || die "--tcp-retries2: a number, not '$RETRIES'" ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  { [ -z "$RATE" ] || command -v tc >/dev/null; } || die "--rate needs 'tc' (apt-get install iproute2)"
  command -v unshare >/dev/null || die "needs 'unshare' (util-linux)"
  export ASYMML_NETNS_ID="${ASYMML_NETNS_ID:-$$}"
  ID="$(run_id)"; STATE="$(state_dir "$ID")"; BRIDGE="asb-$ID"
  [ ! -e "$STATE" ] || die "cluster $ID exists already ($STATE); 'down' it or pick another ASYMML_NETNS_ID"
  ip link show "$BRIDGE" >/dev/null 2>&1 && die "bridge $BRIDGE exists already; 'down' cluster $ID first"
  mkdir -p "$STATE"
  # Whatever fails from here on is undone.
  UP_DONE=0
  trap '[ "$UP_DONE" = 1 ] || { echo "netns-cluster: up failed; removing what it made" >&2; cmd_down >/dev/null 2>&1; }' EXIT
  # Parallel runs pick their subnets one at a time.
  exec 9>"${TMPDIR:-/tmp}/asymml-netns.lock"; flock 9
  SUBNET="$(pick_subnet)"
  ip link add "$BRIDGE" type bridge
  ip addr add "$SUBNET.254/24" dev "$BRIDGE"
  : >"$STATE/hosts"
  { echo "ID=$ID"; echo "SUBNET=$SUBNET"; echo "BRIDGE=$BRIDGE"; echo "N=$n"; } >"$STATE/env"
  local k ns veth
  for k in $(seq 1 "$n"); do
    ns="asym-$ID-h$k"; veth="asv${ID}h$k"
    ip netns add "$ns"
    echo "h$k $SUBNET.$k $ns $veth" >>"$STATE/hosts"
    ip link add "$veth" type veth peer name "${veth}p"
    ip link set "${veth}p" netns "$ns"
    ip -n "$ns" link set "${veth}p" name eth0
    ip -n "$ns" addr add "$SUBNET.$k/24" dev eth0
    ip -n "$ns" link set lo up
    [ -z "$RETRIES" ] || ip netns exec "$ns" sysctl -q -w "net.ipv4.tcp_retries2=$RETRIES"
    ip -n "$ns" link set eth0 up
    ip link set "$veth" master "$BRIDGE"
    ip link set "$veth" up
    shape "$veth"; shape eth0 "$ns"
  done
  ip link set "$BRIDGE" up
  flock -u 9
  awk '{ print $2 " slots=1" }' "$STATE/hosts" >"$STATE/hostfile"
  write_agent
  local flags="--mca btl tcp,self --mca btl_tcp_if_include $SUBNET.0/24 --mca oob_tcp_if_include $SUBNET.0/24 --mca plm_rsh_agent $STATE/rsh-agent"
  echo "MPIRUN_FLAGS=\"$flags\"" >>"$STATE/env"
  wait_reachable
  UP_DONE=1
  echo "cluster $ID: $n hosts on $SUBNET.0/24 (bridge $BRIDGE, $SUBNET.254 in the root namespace)${RATE:+, rate $RATE per link}${RETRIES:+, tcp_retries2 $RETRIES}"
  awk '{ printf "  %-4s %-15s %s\n", $1, $2, $3 }' "$STATE/hosts"
  echo "state: $STATE (env, hosts, hostfile, rsh-agent)"
  echo "ASYMML_NETNS_ID=$ID"
}

# Wait until every host answers a TCP connection attempt from the root namespace (a refusal
# is an answer: nothing listens on port 9).
wait_reachable() {
  local addr k out
  for addr in $(awk '{ print $2 }' "$STATE/hosts"); do
    for k in $(seq 1 100); do
      out="$(timeout 1 bash -c "exec 3<>/dev/tcp/$addr/9" 2>&1 || true)"
      [[ "$out" != *refused* ]] || continue 2
      sleep 0.05
    done
    die "host $addr does not answer from the root namespace"
  done
}

# rsh-agent: a script of its own (Open MPI splits plm_rsh_agent on spaces), called as
# `rsh-agent [ssh options] HOST COMMAND...`, like ssh: the command words are joined and run
# by a shell on that host, here in the host's namespace with its hostname, in a fresh
# login-like environment as ssh would give (ASYMML_NETNS_KEEP_ENV=1: the caller's).
write_agent() {
  cat >"$STATE/rsh-agent" <<EOF
#!/usr/bin/env bash
# Generated by scripts/netns-cluster.sh for cluster $ID: Open MPI's plm_rsh_agent.
export ASYMML_NETNS_ID=$ID TMPDIR="${TMPDIR:-/tmp}"
exec "$self" rsh-agent "\$@"
EOF
  chmod +x "$STATE/rsh-agent"
}

cmd_rsh_agent() {
  load
  while [ $# -gt 0 ] && [[ "$1" == -* ]]; do shift; done   # ssh-style options (e.g. -x)
  [ $# -ge 2 ] || die "rsh-agent: usage: rsh-agent HOST COMMAND..."
  local ns; ns="$(host_field "$1" 3)"; shift
  local env=(env -i HOME="${HOME:-/root}" USER="$(id -un)" LOGNAME="$(id -un)" SHELL=/bin/sh LANG="${LANG:-C.UTF-8}"
             PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
  [ "${ASYMML_NETNS_KEEP_ENV:-0}" = 1 ] && env=()
  exec "${env[@]}" ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$ns" "$*"
}

cmd_exec() {
  load
  [ $# -ge 2 ] || die "exec: usage: exec HOST CMD..."
  local ns; ns="$(host_field "$1" 3)"; shift
  exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$ns" "$@"
}

cmd_hostfile() {
  load
  local slots=1 hosts=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --slots) slots="$2"; shift 2 ;;
      *) hosts+=("$1"); shift ;;
    esac
  done
  [ ${#hosts[@]} -gt 0 ] || hosts=($(awk '{ print $1 }' "$STATE/hosts"))
  local h; for h in "${hosts[@]}"; do echo "$(host_field "$h" 2) slots=$slots"; done
}

cmd_link() {  # cmd_link down|up HOST
  load
  local veth; veth="$(host_field "$2" 4)"
  ip link set "$veth" "$1"
  echo "$(host_field "$2" 1) ($(host_field "$2" 2)): link $1"
}

cmd_down() {
  local id; id="$(run_id)"; local st; st="$(state_dir "$id")"
  local ns
  # The namespaces of this run, from the state or (if that is gone) by their names.
  for ns in $( { [ -r "$st/hosts" ] && awk '{ print $3 }' "$st/hosts"; ip netns list | awk -v p="asym-$id-h" 'index($1, p) == 1 { print $1 }'; } | sort -u); do
    # Processes still running in that host (e.g. orted after a cut): end them by pid.
    local pids; pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  local veth
  for veth in $(ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -E "^asv${id}h[0-9]+$" || true); do
    ip link del "$veth" 2>/dev/null || true
  done
  ip link del "asb-$id" 2>/dev/null || true
  rm -rf "$st"
  echo "cluster $id: down"
}

[ $# -ge 1 ] || usage
cmd="$1"; shift
case "$cmd" in
  up) cmd_up "$@" ;;
  down) need_root; cmd_down ;;
  hosts) load; awk '{ print $1, $2, $3 }' "$STATE/hosts" ;;
  hostfile) cmd_hostfile "$@" ;;
  mpirun-flags) load; echo "$MPIRUN_FLAGS" ;;
  state) load; echo "$STATE" ;;
  exec) need_root; cmd_exec "$@" ;;
  rsh-agent) cmd_rsh_agent "$@" ;;
  cut) need_root; [ $# = 1 ] || die "cut HOST"; cmd_link down "$1" ;;
  heal) need_root; [ $# = 1 ] || die "heal HOST"; cmd_link up "$1" ;;
  -h|--help|help) usage ;;
  *) die "unknown command '$cmd'" ;;
esac
