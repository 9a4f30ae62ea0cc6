#!/usr/bin/env bash
# kafka-local.sh runs a real Apache Kafka (KRaft, broker+controller per node)
# on 127.0.0.1 for the integration tests, from Maven Central jars.
#
#   scripts/kafka-local.sh start [--brokers 1|3] [--controllers 1|3]
#                                                  start, wait until ready, print KAFKA_BROKERS;
#                                                  --controllers runs the KRaft controllers as
#                                                  nodes of their own (3 brokers only), as
#                                                  production does: a broker crash then costs
#                                                  no controller election
#   scripts/kafka-local.sh stop                    stop our nodes, delete their data
#   scripts/kafka-local.sh status                  what runs, and whether it answers
#   scripts/kafka-local.sh env                     print KAFKA_BROKERS=... (and the secured listeners) of the running cluster
#   scripts/kafka-local.sh logs [N]                last N (default 80) lines of each node's log
#   scripts/kafka-local.sh kill N                  SIGKILL node N of the running cluster (a crash)
#   scripts/kafka-local.sh stop-node N             stop node N cleanly (SIGTERM), keeping its data
#   scripts/kafka-local.sh start-node N            start node N again with its config and data, wait until ready
#   scripts/kafka-local.sh bounce N                stop-node N, then start-node N
#
# Everything lives under .kafka/ at the repo root (git-ignored):
#   .kafka/lib/        the broker's jars (kept between runs; deleted jars are fetched again)
#   .kafka/conf/       generated node-N.properties
#   .kafka/data/       log dirs (deleted by stop)
#   .kafka/logs/       node-N/server.log (log4j2) and node-N/stdout.log (JVM)
#   .kafka/run/        node-N.pid, nodes (how many), brokers (the seed list),
#                      controller-J.pid and controllers (how many dedicated ones)
#   .kafka/tls/        a throw-away CA (ca.pem, ca.key) and the brokers' certificate
#                      and PKCS12 keystore (broker.p12), made on the first start
#                      and kept: delete the directory to make new ones
#
# Ports: node N (1..3) listens for clients on
#   19091+N  PLAINTEXT
#   19116+N  SSL (TLS, server certificate only)
#   19141+N  SASL_PLAINTEXT (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN for the
#            user sgtest, password sgtest-secret)
#   19166+N  SASL_SSL (the same users and mechanisms over TLS)
# and for the controller quorum on 19191+N (dedicated controller J: 19191+J,
# node id 100+J). SG_KAFKA_PORT (default 19092)
# moves them all: they are SG_KAFKA_PORT-1+N plus 0, 25, 50, 75 and 100.
# The certificate names DNS:localhost and IP:127.0.0.1 and is signed by
# .kafka/tls/ca.pem. `env` also prints, for the security tests,
# KAFKA_SASL_BROKERS, KAFKA_SASL_USER, KAFKA_SASL_PASSWORD,
# KAFKA_TLS_BROKERS, KAFKA_SASL_SSL_BROKERS and KAFKA_TLS_CA (the CA's PEM).
#
# Environment: SG_KAFKA_HOME (default <repo>/.kafka), SG_KAFKA_START_TIMEOUT
# (seconds, default 120), SG_KAFKA_HEAP (JVM heap flags per node),
# SG_KAFKA_PROPS (extra broker settings, key=value, overriding ours),
# JAVA (java binary), MVN (mvn binary), OPENSSL (openssl binary, for the
# certificates).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
home=${SG_KAFKA_HOME:-$repo/.kafka}
lib=$home/lib
run=$home/run
conf=$home/conf
data=$home/data
logs=$home/logs
tlsdir=$home/tls
pom=$repo/scripts/kafka/pom.xml
log4j=$repo/scripts/kafka/log4j2.xml
java=${JAVA:-java}
mvn=${MVN:-mvn}
openssl=${OPENSSL:-openssl}
client_base=${SG_KAFKA_PORT:-19092}
controller_base=$((client_base + 100))
start_timeout=${SG_KAFKA_START_TIMEOUT:-120}
stop_timeout=20

say() { printf 'kafka-local: %s\n' "$*"; }
die() { printf 'kafka-local: error: %s\n' "$*" >&2; exit 1; }

usage() {
	sed -n '2,/^# Everything/{/^# Everything/!p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 2
}

client_port() { echo $((client_base + $1 - 1)); }
controller_port() { echo $((controller_base + $1 - 1)); }
ssl_port() { echo $((client_base + 25 + $1 - 1)); }
sasl_port() { echo $((client_base + 50 + $1 - 1)); }
sasl_ssl_port() { echo $((client_base + 75 + $1 - 1)); }
sasl_user=sgtest
sasl_password=sgtest-secret

# addrs_for n port_fn lists 127.0.0.1:<port> of nodes 1..n, comma separated.
addrs_for() {
	local n=$1 fn=$2 i out=""
	for ((i = 1; i <= n; i++)); do
		out+="${out:+,}127.0.0.1:$("$fn" "$i")"
	done
	echo "$out"
}
brokers_for() { addrs_for "$1" client_port; }

# print_env prints what the tests need to reach the running n nodes on each
# of their listeners.
print_env() {
	local n=$1
	echo "KAFKA_BROKERS=$(addrs_for "$n" client_port)"
	echo "KAFKA_SASL_BROKERS=$(addrs_for "$n" sasl_port)"
	echo "KAFKA_SASL_USER=$sasl_user"
	echo "KAFKA_SASL_PASSWORD=$sasl_password"
	echo "KAFKA_TLS_BROKERS=$(addrs_for "$n" ssl_port)"
	echo "KAFKA_SASL_SSL_BROKERS=$(addrs_for "$n" sasl_ssl_port)"
	echo "KAFKA_TLS_CA=$tlsdir/ca.pem"
}

# pid_alive tells whether the pid file names a live kafka.Kafka process of
# ours: pids are recycled, so a bare kill -0 could point at a stranger.
pid_alive() {
	local f=$1 pid
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "kafka.Kafka $conf/" || return 1
}

running_nodes() {
	local f
	for f in "$run"/node-*.pid "$run"/controller-*.pid; do
		[[ -e $f ]] || continue
		if pid_alive "$f"; then basename "$f" .pid; fi
	done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# fetch_jars copies the broker and its dependencies into $lib once. The
# stamp holds the pom's checksum, so editing the pom refreshes the jars.
fetch_jars() {
	local sum
	sum=$(sha256sum "$pom" | cut -d' ' -f1)
	if [[ -f $lib/.stamp && $(<"$lib/.stamp") == "$sum" ]] && compgen -G "$lib/kafka_2.13-*.jar" >/dev/null; then
		return 0
	fi
	command -v "$mvn" >/dev/null || die "mvn not found: install Maven 3 (and Java 17+) to fetch the Kafka jars"
	say "fetching Kafka jars from Maven into $lib (first run only)"
	rm -rf "$lib"
	mkdir -p "$lib"
	local t0=$SECONDS
	if ! "$mvn" -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
		-DoutputDirectory="$lib" -DincludeScope=runtime >"$home/mvn.log" 2>&1; then
		cat "$home/mvn.log" >&2
		rm -rf "$lib"
		die "maven could not resolve the Kafka jars (see above)"
	fi
	echo "$sum" >"$lib/.stamp"
	say "fetched $(find "$lib" -name '*.jar' | wc -l) jars in $((SECONDS - t0))s"
}

kafka_version() {
	local j
	j=$(compgen -G "$lib/kafka_2.13-*.jar" | head -n1)
	j=${j##*/kafka_2.13-}
	echo "${j%.jar}"
}

# build_probe compiles scripts/kafka/kprobe, the readiness check. Without
# Go we fall back to the broker's own "started" log line.
probe=""
build_probe() {
	command -v go >/dev/null || { say "go not found: readiness falls back to the broker log"; return 0; }
	mkdir -p "$home/bin"
	if (cd "$repo" && go build -o "$home/bin/kprobe" ./scripts/kafka/kprobe) >"$home/kprobe-build.log" 2>&1; then
		probe=$home/bin/kprobe
	else
		say "could not build scripts/kafka/kprobe (readiness falls back to the broker log):"
		sed 's/^/  /' "$home/kprobe-build.log"
	fi
}

# make_certs makes, once per $home, a throw-away CA and a certificate for
# the brokers (DNS:localhost, IP:127.0.0.1) signed by it, in a PKCS12
# keystore for the SSL and SASL_SSL listeners. Later starts reuse them
# unless a file is missing or the certificate expires within a day. The CA
# key stays beside them: this CA signs nothing but test brokers.
tls_password=sgtest-keystore
make_certs() {
	if [[ -s $tlsdir/ca.pem && -s $tlsdir/broker.pem && -s $tlsdir/broker.p12 ]] &&
		"$openssl" x509 -checkend 86400 -noout -in "$tlsdir/broker.pem" >/dev/null 2>&1; then
		return 0
	fi
	command -v "$openssl" >/dev/null || die "openssl not found: it makes the TLS listeners' certificates (set OPENSSL)"
	local t0=$SECONDS tmp=$home/tls.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	if ! (
		set -e
		cd "$tmp"
		"$openssl" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
			-subj "/CN=scattergather kafka-local test CA" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
			-keyout ca.key -out ca.pem
		"$openssl" req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-subj "/CN=localhost" -keyout broker.key -out broker.csr
		printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
			"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >broker.ext
		"$openssl" x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-days 825 -sha256 -extfile broker.ext -out broker.pem
		"$openssl" pkcs12 -export -name broker -in broker.pem -inkey broker.key \
			-certfile ca.pem -passout "pass:$tls_password" -out broker.p12
		rm -f broker.csr broker.ext ca.srl
		chmod 600 ca.key broker.key broker.p12
	) >"$home/tls.log" 2>&1; then
		cat "$home/tls.log" >&2
		rm -rf "$tmp"
		die "making the TLS certificates failed (see above)"
	fi
	rm -rf "$tlsdir"
	mv "$tmp" "$tlsdir"
	say "made a test CA and broker certificate in ${tlsdir#"$repo"/} in $((SECONDS - t0))s"
}

# cluster_id makes a KRaft cluster id: 16 random bytes, URL-safe base64
# without padding, like org.apache.kafka.common.Uuid. Kafka never hands out
# one starting with '-' (it reads as a flag), nor do we.
cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
		[[ $id == -* ]] || break
	done
	echo "$id"
}

# voters_for n c prints controller.quorum.voters: nodes 1..n that are
# controllers too (c = 0), or c dedicated controllers (ids 101..).
voters_for() {
	local n=$1 c=$2 j voters=""
	if ((c == 0)); then
		for ((j = 1; j <= n; j++)); do voters+="${voters:+,}$j@127.0.0.1:$(controller_port "$j")"; done
	else
		for ((j = 1; j <= c; j++)); do voters+="${voters:+,}$((100 + j))@127.0.0.1:$(controller_port "$j")"; done
	fi
	echo "$voters"
}

# failover_props prints the settings that make a cluster fail over in
# seconds (see write_config).
failover_props() {
	cat <<-FAILOVER

	# Broker failover in seconds (see kafka-local.sh)
	broker.session.timeout.ms=2000
	broker.heartbeat.interval.ms=250
	controller.quorum.fetch.timeout.ms=1000
	controller.quorum.election.timeout.ms=500
	# A follower whose fetch of a moved partition fails (its metadata and
	# the new leader's do not agree yet) fetches that partition again only
	# after this, and the new leader's acks=all writes wait for it (the
	# default is 1000; docs/guarantees.md, "Running through broker
	# failures", item 3).
	replica.fetch.backoff.ms=100
	# A group or transaction coordinator that moves first reads its
	# partition of __consumer_offsets or __transaction_state; 1 MiB
	# segments (Kafka's least; the default is 100 MiB) let compaction keep
	# that read short.
	offsets.topic.segment.bytes=1048576
	transaction.state.log.segment.bytes=1048576
	# A produce in a transaction whose previous one's markers are not all
	# written yet is answered CONCURRENT_TRANSACTIONS only after the
	# broker has tried again for this long (the default is 100), not after
	# 100ms; the client then tries again only after its next metadata
	# refresh, so each such round cost a transaction 100-200ms. At a true
	# 50 req/s on 3 nodes: the roles' rounds fell to near 0 and COMPLETE
	# rose in 3 of 4 runs (docs/guarantees.md, "Session 16").
	add.partitions.to.txn.retry.backoff.max.ms=1000
	FAILOVER
}

# extra_props appends SG_KAFKA_PROPS to the config file $1: key=value
# lines (newline- or space-separated), last, so that they override the
# settings above (Java properties: the last value of a key wins); used to
# measure other settings.
extra_props() {
	if [[ -n ${SG_KAFKA_PROPS:-} ]]; then
		printf '\n# SG_KAFKA_PROPS\n' >>"$1"
		tr ' ' '\n' <<<"$SG_KAFKA_PROPS" | sed '/^$/d' >>"$1"
	fi
}

# write_controller_config writes dedicated controller $1 of $2, for a
# cluster of $3 brokers.
write_controller_config() {
	local j=$1 c=$2 n=$3 f=$conf/controller-$1.properties
	cat >"$f" <<EOF
# Generated by scripts/kafka-local.sh: dedicated controller $j of $c, for $n brokers. Edits are lost on start.
process.roles=controller
node.id=$((100 + j))
controller.quorum.voters=$(voters_for "$n" "$c")
listeners=CONTROLLER://127.0.0.1:$(controller_port "$j")
listener.security.protocol.map=CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$data/controller-$j
num.network.threads=1
num.io.threads=2
background.threads=2
EOF
	failover_props >>"$f"
	extra_props "$f"
}

# write_config writes broker node $1 of $2; $3 dedicated controllers (0:
# every node is a controller too).
write_config() {
	local i=$1 n=$2 c=${3:-0} f=$conf/node-$1.properties rf isr roles listeners
	if ((n == 1)); then rf=1 isr=1; else rf=3 isr=2; fi
	roles=broker,controller
	listeners="PLAINTEXT://127.0.0.1:$(client_port "$i"),SSL://127.0.0.1:$(ssl_port "$i"),SASL_PLAINTEXT://127.0.0.1:$(sasl_port "$i"),SASL_SSL://127.0.0.1:$(sasl_ssl_port "$i")"
	if ((c == 0)); then
		listeners+=",CONTROLLER://127.0.0.1:$(controller_port "$i")"
	else
		roles=broker
	fi
	cat >"$f" <<EOF
# Generated by scripts/kafka-local.sh: node $i of $n. Edits are lost on start.
process.roles=$roles
node.id=$i
controller.quorum.voters=$(voters_for "$n" "$c")
listeners=$listeners
advertised.listeners=PLAINTEXT://127.0.0.1:$(client_port "$i"),SSL://127.0.0.1:$(ssl_port "$i"),SASL_PLAINTEXT://127.0.0.1:$(sasl_port "$i"),SASL_SSL://127.0.0.1:$(sasl_ssl_port "$i")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT

# The SASL listeners for the security tests: SCRAM users are created by
# the storage format (--add-scram), the PLAIN user is listed here. No
# authorizer: an authenticated user may do anything.
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$sasl_password";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$sasl_password";

# The SSL and SASL_SSL listeners present the certificate make_certs made
# (signed by $tlsdir/ca.pem); clients need no certificate of their own.
ssl.keystore.type=PKCS12
ssl.keystore.location=$tlsdir/broker.p12
ssl.keystore.password=$tls_password
ssl.key.password=$tls_password
ssl.client.auth=none
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/node-$i

# Tests create their own topics, as production code must.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr

# Internal topics fit the cluster size, so transactions and groups work on
# one node; fewer partitions than the defaults keep a cold start fast.
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr

# Fast groups: no initial join delay, and KIP-848 heartbeats every 500ms
# instead of 5s (the same values internal/testkafka gives kfake).
group.initial.rebalance.delay.ms=0
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.share.min.heartbeat.interval.ms=500
group.share.heartbeat.interval.ms=500

# Retention and compaction act within seconds when a test sets
# segment.ms / retention.ms / cleanup.policy=compact on its topic.
log.retention.check.interval.ms=1000
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.backoff.ms=1000
log.cleaner.dedupe.buffer.size=33554432
log.segment.delete.delay.ms=1000
file.delete.delay.ms=1000

# Aborted transactions are timed out and cleaned up quickly.
transaction.abort.timed.out.transaction.cleanup.interval.ms=5000

# A small box: two cores, several nodes, parallel test packages.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.flush.interval.messages=9223372036854775807
EOF
	# Broker failover in seconds (docs/guarantees.md, "Running through
	# broker failures"): on a cluster the controller fences a broker 2s
	# after its last heartbeat (Kafka's default: 9s, heartbeats every 2s;
	# heartbeats here every 250ms), so the partitions a crashed node led
	# move after about 2s instead of 9s. A live broker that cannot
	# heartbeat for 2s (a long GC pause) is fenced too and rejoins at once. One node has nothing to fail over
	# to, and fencing itself on a loaded machine would stop every write:
	# it keeps the defaults. Every node here is a controller too, so a
	# crash can take the active controller with it: the others elect a new
	# one after 1s without news from it (controller.quorum.fetch.timeout.ms,
	# default 2s) and elections time out after 500ms (default 1s). The new
	# controller then waits a full broker session before it fences the
	# dead node. With dedicated controllers (start --controllers) a broker
	# crash takes no controller with it: no election, and the controller,
	# up all along, fences the dead broker one session after its last
	# heartbeat. Measured effect in docs/guarantees.md.
	if ((n > 1)); then
		failover_props >>"$f"
	fi
	extra_props "$f"
}

start_node() { start_jvm "node-$1" "$heap"; }

# start_jvm starts the Kafka process named $1 (node-N or controller-J: its
# config, log dir and pid file) with the heap flags $2.
start_jvm() {
	local name=$1 flags=$2 pid
	mkdir -p "$logs/$name"
	: >"$logs/$name/stdout.log"
	# shellcheck disable=SC2086 # heap flags are a list
	nohup "$java" $flags -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
		-Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$log4j" -Dkafka.logs.dir="$logs/$name" \
		-cp "$lib/*" kafka.Kafka "$conf/$name.properties" \
		>"$logs/$name/stdout.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$run/$name.pid"
}

tail_logs() {
	local lines=${1:-80} d
	for d in "$logs"/node-* "$logs"/controller-*; do
		[[ -d $d ]] || continue
		if grep -qE '^\[[^]]*\] (WARN|ERROR|FATAL) ' "$d/server.log" 2>/dev/null; then
			echo "----- $d/server.log: last 20 WARN/ERROR lines -----"
			grep -E '^\[[^]]*\] (WARN|ERROR|FATAL) ' "$d/server.log" | tail -n 20
		fi
		echo "----- $d/server.log: last $lines lines -----"
		tail -n "$lines" "$d/server.log" 2>/dev/null || echo "(no server.log)"
		if [[ -s $d/stdout.log ]]; then
			echo "----- $d/stdout.log: last 20 lines -----"
			tail -n 20 "$d/stdout.log"
		fi
	done
}

# ready tells whether all n nodes answer. With kprobe that means metadata
# lists n brokers and a controller; without it, each node logged that it
# started.
ready() {
	local n=$1 i
	if [[ -n $probe ]]; then
		"$probe" -brokers "$(brokers_for "$n")" -want "$n" -timeout 2s >"$run/probe.out" 2>&1
		return
	fi
	for ((i = 1; i <= n; i++)); do
		grep -q "Kafka Server started" "$logs/node-$i/server.log" 2>/dev/null || return 1
	done
}

cmd_start() {
	local n=1 c=0
	while (($#)); do
		case $1 in
		--brokers) n=${2:-}; shift 2 || usage ;;
		--brokers=*) n=${1#*=}; shift ;;
		--controllers) c=${2:-}; shift 2 || usage ;;
		--controllers=*) c=${1#*=}; shift ;;
		*) usage ;;
		esac
	done
	[[ $n == 1 || $n == 3 ]] || die "--brokers must be 1 or 3, not $n"
	[[ $c == 0 || $c == 1 || $c == 3 ]] || die "--controllers must be 1 or 3 (0: every broker is a controller too), not $c"
	((c == 0 || n == 3)) || die "--controllers needs --brokers 3: a single node is its own controller"

	local live
	live=$(running_nodes)
	if [[ -n $live ]]; then
		local have
		have=$(cat "$run/nodes" 2>/dev/null || echo "?")
		if [[ $have == "$n" && $(cat "$run/controllers" 2>/dev/null || echo 0) == "$c" && $(wc -w <<<"$live") == "$((n + c))" ]]; then
			say "already running ($n node(s), pids $(cat "$run"/node-*.pid | tr '\n' ' '))"
			print_env "$n"
			return 0
		fi
		die "a cluster of $have node(s) is running ($(tr '\n' ' ' <<<"$live")); run '$0 stop' first"
	fi

	command -v "$java" >/dev/null || die "java not found: Kafka $(grep -o '<kafka.version>[^<]*' "$pom" | cut -d'>' -f2) needs Java 17+"
	mkdir -p "$home" "$run" "$conf"
	rm -f "$run"/*.pid "$run/nodes" "$run/brokers" "$run/controllers"
	fetch_jars
	build_probe
	make_certs

	local i p
	for ((i = 1; i <= n; i++)); do
		for p in "$(client_port "$i")" "$(ssl_port "$i")" "$(sasl_port "$i")" "$(sasl_ssl_port "$i")" "$(controller_port "$i")"; do
			if port_busy "$p"; then die "port $p on 127.0.0.1 is taken by another process; set SG_KAFKA_PORT to move ours"; fi
		done
	done
	for ((i = 1; i <= c; i++)); do
		p=$(controller_port "$i")
		if port_busy "$p"; then die "port $p on 127.0.0.1 is taken by another process; set SG_KAFKA_PORT to move ours"; fi
	done

	heap=$(heap_for "$n")
	rm -rf "$data" "$logs"
	mkdir -p "$data" "$logs"

	local id t0=$SECONDS
	id=$(cluster_id)
	if ((c == 0)); then
		say "starting Kafka $(kafka_version) in KRaft mode: $n node(s), cluster id $id"
	else
		say "starting Kafka $(kafka_version) in KRaft mode: $n broker(s) and $c dedicated controller(s), cluster id $id"
	fi
	local names=()
	for ((i = 1; i <= c; i++)); do
		write_controller_config "$i" "$c" "$n"
		names+=("controller-$i")
	done
	for ((i = 1; i <= n; i++)); do
		write_config "$i" "$n" "$c"
		names+=("node-$i")
	done
	# Format every node's log dir with the one cluster id, in parallel: a
	# JVM start is a couple of seconds on two cores.
	local fpids=() name
	for name in "${names[@]}"; do
		"$java" -Xmx256m -Dlog4j2.configurationFile="$log4j" -Dkafka.logs.dir="$logs" \
			-cp "$lib/*" kafka.tools.StorageTool format --cluster-id "$id" \
			--config "$conf/$name.properties" \
			--add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$sasl_password]" \
			--add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]" \
			>"$logs/format-$name.log" 2>&1 &
		fpids+=($!)
	done
	for ((i = 0; i < ${#names[@]}; i++)); do
		if ! wait "${fpids[i]}"; then
			cat "$logs/format-${names[i]}.log" >&2
			die "formatting ${names[i]}'s storage failed"
		fi
	done
	echo "$n" >"$run/nodes"
	echo "$c" >"$run/controllers"
	brokers_for "$n" >"$run/brokers"
	for ((i = 1; i <= c; i++)); do
		start_jvm "controller-$i" "${SG_KAFKA_HEAP:--Xms128m -Xmx256m}"
	done
	for ((i = 1; i <= n; i++)); do
		start_node "$i"
	done

	local deadline=$((SECONDS + start_timeout)) f
	while ! ready "$n"; do
		for f in "$run"/node-*.pid "$run"/controller-*.pid; do
			[[ -e $f ]] || continue
			if ! pid_alive "$f"; then
				tail_logs 80 >&2
				cmd_stop >/dev/null 2>&1 || true
				die "$(basename "$f" .pid) exited during start-up (its log is above)"
			fi
		done
		if ((SECONDS >= deadline)); then
			[[ -s $run/probe.out ]] && cat "$run/probe.out" >&2
			tail_logs 80 >&2
			cmd_stop >/dev/null 2>&1 || true
			die "not ready after ${start_timeout}s (logs above)"
		fi
		sleep 0.5
	done
	[[ -s $run/probe.out ]] && say "$(cat "$run/probe.out")"
	local what="$n node(s)"
	((c == 0)) || what="$n broker(s) and $c controller(s)"
	say "started $what in $((SECONDS - t0))s; logs in ${logs#"$repo"/}"
	say "to use it: export KAFKA_BROKERS=$(cat "$run/brokers") (or eval the lines below, prefixed with export)"
	print_env "$n"
}

# cmd_stop sends TERM, then KILL after stop_timeout seconds, and deletes the
# data dirs (logs stay for a post-mortem). Only pids from our pid files that
# still run kafka.Kafka with our config are touched.
cmd_stop() {
	local stopped=0
	# Brokers first: a broker's controlled shutdown asks the controller,
	# and waits out stop_timeout if the controller went first.
	stop_pids "$run"/node-*.pid && stopped=1
	stop_pids "$run"/controller-*.pid && stopped=1
	if ((stopped)); then say "stopped"; else say "not running"; fi
	rm -f "$run"/node-*.pid "$run"/controller-*.pid "$run/nodes" "$run/controllers" "$run/brokers" "$run/probe.out"
	rm -rf "$data"
}

# stop_pids sends TERM to the live processes of the pid files given, then
# KILL to those still there after stop_timeout, and waits until they are
# gone; it fails when none was running.
stop_pids() {
	local f pid pids=() t
	for f in "$@"; do
		[[ -e $f ]] || continue
		if pid_alive "$f"; then pids+=("$(<"$f")"); fi
	done
	((${#pids[@]})) || return 1
	say "stopping pids ${pids[*]}"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	t=$SECONDS
	while ((SECONDS - t < stop_timeout)); do
		local alive=()
		for pid in "${pids[@]}"; do
			kill -0 "$pid" 2>/dev/null && alive+=("$pid")
		done
		((${#alive[@]})) || break
		sleep 0.5
	done
	for pid in "${pids[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			say "pid $pid ignored TERM for ${stop_timeout}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	done
}

cmd_status() {
	local live f n
	live=$(running_nodes)
	if [[ -z $live ]]; then
		say "not running"
		return 3
	fi
	n=$(cat "$run/nodes" 2>/dev/null || echo "?")
	for f in "$run"/node-*.pid "$run"/controller-*.pid; do
		[[ -e $f ]] || continue
		if pid_alive "$f"; then
			say "$(basename "$f" .pid): running, pid $(<"$f")"
		else
			say "$(basename "$f" .pid): NOT running"
		fi
	done
	if [[ -x $home/bin/kprobe ]]; then
		if "$home/bin/kprobe" -brokers "$(cat "$run/brokers")" -want "$n" -timeout 5s >"$run/probe.out" 2>&1; then
			say "$(cat "$run/probe.out")"
		else
			say "does not answer: $(cat "$run/probe.out")"
			return 1
		fi
	fi
	print_env "$(cat "$run/nodes")"
}

cmd_env() {
	[[ -n $(running_nodes) && -f $run/brokers ]] || die "not running; run '$0 start' first"
	print_env "$(cat "$run/nodes")"
}

# --- one node of the running cluster: crashes and restarts ----------------
# kill, stop-node, start-node and bounce act on node N of the cluster that
# `start` made (scattergather chaos --broker-kills/--broker-bounces calls
# them). They find the node by run/node-N.pid, checked as stop checks it, so
# they never touch a process that is not ours. start-node runs node N again
# with the config and the data dir it had, as after a crash or a restart,
# and returns once metadata lists every node again and each one answers
# (kprobe), or fails after SG_KAFKA_START_TIMEOUT seconds.

# heap_for prints the JVM heap flags of a node in a cluster of $1 nodes.
heap_for() {
	if (($1 == 1)); then echo "${SG_KAFKA_HEAP:--Xms256m -Xmx768m}"; else echo "${SG_KAFKA_HEAP:--Xms192m -Xmx512m}"; fi
}

# node_check dies unless $1 names a node of the cluster `start` made.
node_check() {
	local i=$1 n
	[[ -f $run/nodes ]] || die "no cluster under $home: run '$0 start' first"
	n=$(<"$run/nodes")
	[[ $i =~ ^[0-9]+$ ]] && ((i >= 1 && i <= n)) || die "node: want 1..$n, not '$i'"
	[[ -f $conf/node-$i.properties && -d $data/node-$i ]] || die "node $i has no config or data under $home"
}

# node_signal sends SIG$2 to node $1 and waits until it is gone; a TERM not
# obeyed within stop_timeout is followed by KILL. pid_alive, not kill -0,
# tells when it is gone: a dead node may linger as a zombie here.
node_signal() {
	local i=$1 sig=$2 f=$run/node-$1.pid pid t=$SECONDS
	pid_alive "$f" || die "node $i is not running"
	pid=$(<"$f")
	kill -"$sig" "$pid"
	while pid_alive "$f"; do
		if [[ $sig == TERM ]] && ((SECONDS - t >= stop_timeout)); then
			say "node $i (pid $pid) ignored TERM for ${stop_timeout}s; killing it"
			sig=KILL
			kill -KILL "$pid" 2>/dev/null || true
		fi
		sleep 0.1
	done
	say "node $i (pid $pid) stopped by SIG$sig after $((SECONDS - t))s"
}

# node_start starts node $1 again and waits until the cluster is whole.
node_start() {
	local i=$1 f=$run/node-$1.pid n t0=$SECONDS started probe_bin=$home/bin/kprobe
	if pid_alive "$f"; then die "node $i is already running (pid $(<"$f"))"; fi
	n=$(<"$run/nodes")
	heap=$(heap_for "$n")
	# start_node empties stdout.log: keep what the previous JVM wrote.
	[[ -s $logs/node-$i/stdout.log ]] && cat "$logs/node-$i/stdout.log" >>"$logs/node-$i/stdout-previous.log"
	started=$(grep -c "Kafka Server started" "$logs/node-$i/server.log" 2>/dev/null || true)
	start_node "$i"
	local pid state
	pid=$(<"$f")
	while :; do
		# Right after the fork the child may not run java yet (its cmdline
		# is still ours), so pid_alive is not enough: dead means gone or a
		# zombie.
		state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
		if [[ -z $state || $state == Z ]]; then
			tail -n 40 "$logs/node-$i/stdout.log" >&2 2>/dev/null || true
			die "node $i (pid $pid) exited while starting (the end of its stdout.log is above; server.log has the rest)"
		fi
		# This JVM logged that it started (the count changed), and, with
		# kprobe, metadata lists every node and each one answers.
		if [[ $(grep -c "Kafka Server started" "$logs/node-$i/server.log" 2>/dev/null) != "$started" ]] &&
			{ [[ ! -x $probe_bin ]] || "$probe_bin" -brokers "$(<"$run/brokers")" -want "$n" -timeout 2s >"$run/probe.out" 2>&1; }; then
			break
		fi
		((SECONDS - t0 < start_timeout)) || die "node $i not ready after ${start_timeout}s: $(cat "$run/probe.out" 2>/dev/null)"
		sleep 0.5
	done
	say "node $i started as pid $(<"$f"), ready after $((SECONDS - t0))s"
}

node_cmd() {
	local cmd=$1
	(($# == 2)) || usage
	node_check "$2"
	case $cmd in
	kill) node_signal "$2" KILL ;;
	stop-node) node_signal "$2" TERM ;;
	start-node) node_start "$2" ;;
	bounce) node_signal "$2" TERM && node_start "$2" ;;
	esac
}

case ${1:-} in
start) shift; cmd_start "$@" ;;
kill | stop-node | start-node | bounce) node_cmd "$@" ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
logs) tail_logs "${2:-80}" ;;
*) usage ;;
esac
