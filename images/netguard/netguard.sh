#!/bin/sh
# netguard: apply a claude-lab egress policy in this network namespace, prove it, keep it fresh.
#
# claude-lab (netpolicy.py) generates everything that does not change while the sidecar lives:
#   NETGUARD_SETS    `ipset restore` text: the sets and their fixed members
#   NETGUARD_RULES4  `iptables-restore` text for the filter table (IPv4)
#   NETGUARD_RULES6  `ip6tables-restore` text for the filter table (IPv6)
#   NETGUARD_NAMES   lines "name ports": domains to resolve ("*" = any port, else "443,22")
#   NETGUARD_MODE    open | allowlist | none
#   NETGUARD_REFRESH seconds between re-resolutions (0: never)
#   NETGUARD_TTL     seconds a resolved address stays allowed after it was last seen (0: forever)
#   NETGUARD_CHECK_BLOCKED "ip port" that must be refused; NETGUARD_CHECK_ALLOWED "host port" that
#                    must answer (each optional)
#   NETGUARD_SERVICES names of the services on the shared services network (one a line): their addresses,
#                    and only theirs, are let through on it (set clab_svcok*), re-resolved every
#                    NETGUARD_SERVICES_REFRESH seconds; a name that stops resolving is dropped at once
# Only the filter table is touched: Docker's embedded DNS (127.0.0.11) lives in the nat table.
# Order on every start: sets, rules (default deny from here on), names, checks, one JSON line on
# stdout; then re-resolve every NETGUARD_REFRESH seconds, printing a line when anything changed.
set -u
STATE=/run/netguard
MODE=${NETGUARD_MODE:-none}
REFRESH=${NETGUARD_REFRESH:-0}
TTL=${NETGUARD_TTL:-0}
SERVICES_REFRESH=${NETGUARD_SERVICES_REFRESH:-0}
mkdir -p "$STATE/names"

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
names() { printf '%s\n' "${NETGUARD_NAMES:-}" | while read -r name ports; do [ -n "$name" ] && echo "$name $ports"; done; }
json_list() { # words -> ["a","b"]
  out=""; for w in "$@"; do out="$out${out:+,}\"$w\""; done; printf '[%s]' "$out"
}

resolve_names() { # each name in parallel; a name that does not resolve keeps its last known addresses
  names | {
    while read -r name ports; do
      ( # one lookup for both families (AF_UNSPEC), split by awk: three processes a name
        f="$STATE/names/$name"
        timeout 8 getent ahosts "$name" 2>/dev/null | awk -v f4="$f.4.new" -v f6="$f.6.new" '
          BEGIN { printf "" > f4; printf "" > f6 }
          seen[$1]++ { next }
          $1 ~ /^::ffff:/ { next }
          $1 ~ /:/ { print $1 > f6; next }
          { print $1 > f4 }'
        if [ -s "$f.4.new" ] || [ -s "$f.6.new" ]; then
          mv "$f.4.new" "$f.4"; mv "$f.6.new" "$f.6"
          rm -f "$f.failed"
        else
          rm -f "$f.4.new" "$f.6.new"; touch "$f.failed"
        fi
      ) &
    done
    wait
  }
}

fill_names() { # (re-)add every known address; re-adding an address resets its timeout
  names | while read -r name ports; do
    for fam in 4 6; do
      f="$STATE/names/$name.$fam"
      [ -s "$f" ] || continue
      while read -r ip; do
        [ -n "$ip" ] || continue
        if [ "$ports" = "*" ]; then
          echo "add clab_allow$fam $ip timeout $TTL"
        else
          for p in $(echo "$ports" | tr ',' ' '); do echo "add clab_allowp$fam $ip,tcp:$p timeout $TTL"; done
        fi
      done < "$f"
    done
  done | ipset restore -exist
}

fill_services() { # the services' current addresses, swapped in whole (nothing stale stays allowed)
  [ -n "${NETGUARD_SERVICES:-}" ] || return 0
  printf '%s\n' "$NETGUARD_SERVICES" | {
    while read -r name; do [ -n "$name" ] && timeout 2 getent ahosts "$name" 2>/dev/null & done
    wait
  } | awk '
    BEGIN { for (f = 4; f <= 6; f += 2) { fam = (f == 4) ? "inet" : "inet6"
              print "create clab_svcnew" f " hash:ip family " fam " -exist"; print "flush clab_svcnew" f } }
    seen[$1]++ { next }
    $1 ~ /^::ffff:/ { next }
    $1 ~ /:/ { print "add clab_svcnew6 " $1; next }
    { print "add clab_svcnew4 " $1 }
    END { for (f = 4; f <= 6; f += 2) { print "swap clab_svcnew" f " clab_svcok" f; print "destroy clab_svcnew" f } }' \
  | ipset restore -exist
}

unresolved() { names | while read -r name ports; do [ -e "$STATE/names/$name.failed" ] && printf '%s ' "$name"; done; }
resolved_digest() { cat "$STATE"/names/*.4 "$STATE"/names/*.6 2>/dev/null | sort | md5sum | cut -c1-12; }

hostdeny_count() { iptables -w -nvxL CLAB_HOSTDENY 2>/dev/null | awk 'NR==3 {print $1}'; }

check_blocked() { # refused, and counted by the host-deny rule: the refusal is ours, not a closed port
  [ -n "${NETGUARD_CHECK_BLOCKED:-}" ] || { echo "no blocked target to check"; return 0; }
  set -- $NETGUARD_CHECK_BLOCKED
  before=$(hostdeny_count)
  if nc -z -w 3 "$1" "$2" 2>/dev/null; then echo "FAILED: $1:$2 answered"; return 1; fi
  after=$(hostdeny_count)
  if [ "${after:-0}" -gt "${before:-0}" ]; then echo "refused: $1:$2"; return 0; fi
  echo "FAILED: $1:$2 did not hit the host rule"; return 1
}

check_allowed() { # answers within NETGUARD_CHECK_WAIT s (a service may still be starting after an engine
  # restart; on a swarm a node learns a new overlay's endpoints by gossip)
  [ -n "${NETGUARD_CHECK_ALLOWED:-}" ] || { echo "no allowed target to check"; return 0; }
  set -- $NETGUARD_CHECK_ALLOWED
  wait_s=${NETGUARD_CHECK_WAIT:-20}
  end=$(( $(date +%s) + wait_s ))  # wall clock: each try may itself wait up to 2 s
  while :; do
    if nc -z -w 2 "$1" "$2" 2>/dev/null; then echo "answered: $1:$2"; return 0; fi
    [ "$(date +%s)" -lt "$end" ] || break
    sleep 1
    fill_services  # a service that was (re)starting may have an address by now
  done
  echo "FAILED: $1:$2 did not answer within $wait_s s"; return 1
}

report() { # event ok error
  un=$(unresolved)
  printf '{"netguard":"%s","ok":%s,"mode":"%s","ipv4":"%s","ipv6":"%s","unresolved":%s,"blocked":"%s","allowed":"%s","error":"%s","at":"%s"}\n' \
    "$1" "$2" "$MODE" "$V4" "$V6" "$(json_list $un)" "$BLOCKED" "$ALLOWED" "$3" "$(now)" | tee "$STATE/result.json"
}

run() {
  V4=pending V6=pending BLOCKED="" ALLOWED=""
  trap 'exit 0' TERM INT
  if ! err=$(printf '%s\n' "${NETGUARD_SETS:-}" | ipset restore -exist 2>&1); then
    report applied false "ipset: $(echo "$err" | tr '\n"' ' _')"; exit 1
  fi
  if ! err=$(printf '%s\n' "${NETGUARD_RULES4:-}" | iptables-restore -w 2>&1); then
    report applied false "iptables: $(echo "$err" | tr '\n"' ' _')"; exit 1
  fi
  V4=enforced
  if err=$(printf '%s\n' "${NETGUARD_RULES6:-}" | ip6tables-restore -w 2>&1); then
    V6=enforced
  elif [ ! -e /proc/net/if_inet6 ]; then
    V6="no IPv6 in this kernel"  # nothing can leave over IPv6 then
  else
    report applied false "ip6tables: $(echo "$err" | tr '\n"' ' _')"; exit 1
  fi
  resolve_names
  fill_names
  fill_services
  if [ "$MODE" = none ]; then  # names were resolved through Docker's DNS; from now on it stays inside
    iptables -w -D CLAB_OUT -j CLAB_DNS 2>/dev/null
    ip6tables -w -D CLAB_OUT -j CLAB_DNS 2>/dev/null
  fi
  ok=true
  BLOCKED=$(check_blocked) || ok=false
  ALLOWED=$(check_allowed) || ok=false
  report applied $ok ""
  last=$(resolved_digest)
  lastun=$(unresolved)
  tick=$REFRESH  # the services' addresses every few seconds, the allowlist's names every REFRESH
  if [ -n "${NETGUARD_SERVICES:-}" ] && [ "$SERVICES_REFRESH" -gt 0 ] 2>/dev/null; then tick=$SERVICES_REFRESH; fi
  [ "$tick" -gt 0 ] 2>/dev/null || { while :; do sleep 3600 & wait $!; done; }
  since=0
  while :; do
    sleep "$tick" & wait $!
    fill_services
    since=$((since + tick))
    { [ "$REFRESH" -gt 0 ] 2>/dev/null && [ "$since" -ge "$REFRESH" ]; } || continue
    since=0
    resolve_names
    fill_names
    d=$(resolved_digest); u=$(unresolved)
    if [ "$d" != "$last" ] || [ "$u" != "$lastun" ]; then
      report refreshed true ""
      last=$d lastun=$u
    fi
  done
}

case "${1:-run}" in
  run) run ;;
  allow) # allow IP PORT: one TCP port on one address (the lab's model server on the host)
    case "$2" in *:*) fam=6 ;; *) fam=4 ;; esac
    ipset add -exist "clab_hostok$fam" "$2,tcp:$3" ;;
  result) cat "$STATE/result.json" ;;
  *) echo "usage: netguard [run | allow IP PORT | result]" >&2; exit 2 ;;
esac
