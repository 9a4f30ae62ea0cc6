#!/usr/bin/env bash
# first-request.sh: how long the first request takes after /readyz says 200,
# over fresh `scattergather dev` starts (issue #16, "ready means settled").
#
#   scripts/first-request.sh [BIN] [STARTS]     default bin/scattergather, 10
#
# Each start gets an empty data dir; the script waits for /readyz 200, then
# POSTs the search example twice (?wait=5s) and prints both latencies and
# the first reply's status, then stops dev; on the last start it sends
# SG_FR_STEADY (200) more, one after another after 20 to warm up, and
# prints the p50/p99 of the first requests and of that steady state. Ports: broker 29993, gateway
# 28081, metrics 29190 (override with SG_FR_BROKER, SG_FR_GATEWAY,
# SG_FR_METRICS).
set -euo pipefail
bin=${1:-bin/scattergather}
n=${2:-10}
steady=${SG_FR_STEADY:-200}
broker=${SG_FR_BROKER:-127.0.0.1:29993}
gw=${SG_FR_GATEWAY:-127.0.0.1:28081}
metrics=${SG_FR_METRICS:-127.0.0.1:29190}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
url="http://$gw/v1/routes/search/requests?wait=5s"
body='{"query":"red running shoes","k":5}'
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$n"); do
	rm -rf "$work/data"
	"$bin" dev --data-dir "$work/data" --broker-addr "$broker" --gateway-addr "$gw" --metrics-addr "$metrics" >"$work/dev.log" 2>&1 &
	pid=$!
	ready=""
	for _ in $(seq 1 600); do
		if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$metrics/readyz") == 200 ]]; then
			ready=1
			break
		fi
		sleep 0.05
	done
	if [[ -z $ready ]]; then
		echo "start $i: not ready after 30s; dev's log:"
		tail -20 "$work/dev.log"
		kill "$pid"
		exit 1
	fi
	first=$(curl -s -o "$work/reply.json" -w '%{time_total}' -X POST "$url" -d "$body")
	status=$(grep -o '"status":"[A-Z]*"' "$work/reply.json" | head -1 | cut -d'"' -f4)
	second=$(curl -s -o /dev/null -w '%{time_total}' -X POST "$url" -d "$body")
	echo "start $i: first ${first}s $status, second ${second}s"
	echo "$first" >>"$work/first.txt"
	if ((i == n)); then
		# The steady state, on the last start: 20 requests to warm up,
		# then $steady one after another.
		for _ in $(seq 1 20); do
			curl -s -o /dev/null -X POST "$url" -d "$body"
		done
		for _ in $(seq 1 "$steady"); do
			curl -s -o /dev/null -w '%{time_total}\n' -X POST "$url" -d "$body" >>"$work/steady.txt"
		done
	fi
	kill "$pid"
	wait "$pid" 2>/dev/null || true
done
# pct FILE P: the P-th percentile (nearest rank) of the numbers in FILE, in ms.
pct() { sort -g "$1" | awk -v p="$2" '{v[NR]=$1} END {r=int((p*NR+99)/100); if (r<1) r=1; printf "%.1f", v[r]*1000}'; }
f99=$(pct "$work/first.txt" 99) s50=$(pct "$work/steady.txt" 50) s99=$(pct "$work/steady.txt" 99)
echo "first requests after /readyz: p50 $(pct "$work/first.txt" 50) ms, p99 $f99 ms over $n starts"
echo "steady state: p50 $s50 ms, p99 $s99 ms over $steady requests"
echo "first p99 / steady p99: $(awk -v a="$f99" -v b="$s99" 'BEGIN {printf "%.2f", a/b}')"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
