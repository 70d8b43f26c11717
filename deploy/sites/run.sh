#!/usr/bin/env bash
# Two sites and a hub of rvpd on this machine's loopback, every part its
# own process, as docs/sites.md lays them out: a NATS server per site and
# one for the hub (each its own JetStream domain, the sites joined to the
# hub by leaf connections), the cluster set up with rvpd init at the hub,
# the directory service at the hub, and at each site an rvpd node with a
# gateway, a home server and a router. alice is homed at site a, bob at
# site b.
#
#   deploy/sites/run.sh start    # build, start everything, print how to sign in
#   deploy/sites/run.sh status   # what runs
#   deploy/sites/run.sh stop     # stop everything (the data stays)
#   deploy/sites/run.sh cut b    # sever site b's leaf connection (stop its NATS server)
#   deploy/sites/run.sh mend b   # start it again
#
# Settings (environment): SITES_DIR (data, logs and binaries; default
# ./sites-demo), SITES_PORT (first of ten ports; default 24200),
# SITES_PASSWORD (of admin, alice and bob; default generated once and kept
# in SITES_DIR), SITES_BIN (a directory with rvpd, rvpctl and nats-server
# already built; default: built into SITES_DIR/bin with go).
set -euo pipefail

cmd=${1:-start}
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${SITES_DIR:-$PWD/sites-demo}
base=${SITES_PORT:-24200}
bin=${SITES_BIN:-$dir/bin}

hub_port=$base a_port=$((base + 1)) b_port=$((base + 2)) leaf_port=$((base + 3))
gw_a=$((base + 4)) gw_b=$((base + 5))
mon_hub=$((base + 6)) mon_a=$((base + 7)) mon_b=$((base + 8))
hub_url=nats://127.0.0.1:$hub_port a_url=nats://127.0.0.1:$a_port b_url=nats://127.0.0.1:$b_port

say() { printf '%s\n' "$*" >&2; }
die() { say "run.sh: $*"; exit 1; }

# alive PID: the process runs (one that has exited and waits for its
# parent, init once this script has ended, to reap it does not).
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	local stat
	if [ -r "/proc/$1/stat" ] && stat=$(cat "/proc/$1/stat" 2>/dev/null); then
		stat=${stat##*) }
		[ "${stat%% *}" != Z ] || return 1
	fi
}

# pid_of NAME: the pid of a process this script started, if it runs.
pid_of() {
	local f=$dir/run/$1.pid
	[ -f "$f" ] || return 1
	local pid
	pid=$(cat "$f")
	alive "$pid" || return 1
	echo "$pid"
}

# launch NAME CMD...: start CMD in the background, its output in
# SITES_DIR/log/NAME.log.
launch() {
	local name=$1
	shift
	if pid_of "$name" >/dev/null; then
		die "$name runs already (run.sh stop first)"
	fi
	"$@" >>"$dir/log/$name.log" 2>&1 </dev/null &
	echo $! >"$dir/run/$name.pid"
}

# wait_for WHAT SECONDS CMD...: run CMD until it succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local end=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $end ]; then
			die "$what: not ready after ${secs}s (logs in $dir/log)"
		fi
		sleep 0.2
	done
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# monitor PORT PATH PATTERN: a NATS server's monitoring page PATH on PORT
# matches PATTERN.
monitor() {
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
	grep -q "$3" <&3
	local ok=$?
	exec 3<&-
	return $ok
}

# healthy PORT: the NATS server's JetStream is ready.
healthy() { monitor "$1" /healthz '"status":"ok"'; }

# leafs PORT N: the server has N leaf connections.
leafs() { monitor "$1" /varz "\"leafnodes\": *$2,"; }

build() {
	if [ -n "${SITES_BIN:-}" ]; then
		for b in rvpd rvpctl nats-server; do
			[ -x "$bin/$b" ] || die "SITES_BIN=$bin has no $b"
		done
		return
	fi
	command -v go >/dev/null || die "go is needed to build rvpd and nats-server (or give SITES_BIN)"
	say "building rvpd, rvpctl and nats-server into $bin"
	(cd "$root" && go build -o "$bin/" ./cmd/rvpd ./cmd/rvpctl && go build -o "$bin/nats-server" github.com/nats-io/nats-server/v2)
}

# nats_conf NAME PORT MONITOR: a NATS server of its own JetStream domain
# NAME; the hub listens for leaf connections, a site connects to it.
nats_conf() {
	local name=$1 port=$2 mon=$3 leaf
	if [ "$name" = hub ]; then
		leaf="leafnodes { listen: 127.0.0.1:$leaf_port }"
	else
		leaf="leafnodes { reconnect: 1s, remotes: [ { url: \"nats-leaf://127.0.0.1:$leaf_port\" } ] }"
	fi
	mkdir -p "$dir/$name"
	cat >"$dir/$name/nats.conf" <<-EOF
		server_name: $name
		listen: 127.0.0.1:$port
		http: 127.0.0.1:$mon
		max_payload: 1MB
		jetstream { domain: $name, store_dir: "$dir/$name/jetstream", max_memory_store: 256MB, max_file_store: 2GB }
		$leaf
	EOF
}

password() {
	if [ -n "${SITES_PASSWORD:-}" ]; then
		echo "$SITES_PASSWORD"
	elif [ -f "$dir/password" ]; then
		cat "$dir/password"
	else
		(umask 077 && head -c 9 /dev/urandom | base64 | tr -d '/+=' >"$dir/password")
		cat "$dir/password"
	fi
}

# Each requests and lookups stream reserves its bound of the NATS
# server's max_file_store (2 GB here): 256 MiB each instead of the
# default 1 GiB leaves room for the facts.
stream_bounds=(-requests.max-bytes 268435456)

node() { # node NAME SITE NATS-URL ROLE-FLAGS...
	local name=$1 site=$2 url=$3
	shift 3
	launch "$name" "$bin/rvpd" node -name "$name" -site "$site" -nats "$url" -cluster-key-file "$dir/cluster.key" \
		-data "$dir/$name" "${stream_bounds[@]}" "$@"
}

start() {
	mkdir -p "$dir/run" "$dir/log"
	build
	local pw
	pw=$(password)

	for s in hub:$hub_port:$mon_hub a:$a_port:$mon_a b:$b_port:$mon_b; do
		IFS=: read -r name port mon <<<"$s"
		nats_conf "$name" "$port" "$mon"
		launch "nats-$name" "$bin/nats-server" -c "$dir/$name/nats.conf"
	done
	for mon in $mon_hub $mon_a $mon_b; do
		wait_for "NATS server (monitoring port $mon)" 30 healthy "$mon"
	done
	wait_for "the sites' leaf connections to the hub" 30 leafs "$mon_hub" 2

	if [ ! -f "$dir/initialised" ]; then
		say "setting up the cluster at the hub (rvpd init)"
		printf '%s\n' "$pw" | "$bin/rvpd" init -site hub -nats "$hub_url" -streams.replicas 1 "${stream_bounds[@]}" \
			-cluster-key-file "$dir/cluster.key" -admin.name admin -domain example.test >>"$dir/log/init.log" 2>&1 ||
			die "rvpd init failed: $(tail -3 "$dir/log/init.log")"
	fi

	# The directory service, at the hub; rvpctl reaches it from site a.
	node dir-hub hub "$hub_url" -admin
	export RVPCTL_NATS=$a_url RVPCTL_ADMIN=admin RVPCTL_ADMIN_PASSWORD=$pw
	wait_for "the directory service" 30 "$bin/rvpctl" whoami
	if [ ! -f "$dir/initialised" ]; then
		say "creating the home servers, the router and the users (rvpctl at site a)"
		{
			"$bin/rvpctl" home create home1 -host "127.0.0.1:$gw_a" -site a
			"$bin/rvpctl" home create home2 -host "127.0.0.1:$gw_b" -site b
			"$bin/rvpctl" router create router1 -domain example.test -host im.example.test -mode proxy
			"$bin/rvpctl" user enable alice@example.test -home home1 -name Alice
			"$bin/rvpctl" user enable bob@example.test -home home2 -name Bob
			printf '%s\n' "$pw" | "$bin/rvpctl" password set alice@example.test
			printf '%s\n' "$pw" | "$bin/rvpctl" password set bob@example.test
		} >>"$dir/log/rvpctl.log" 2>&1 || die "rvpctl failed: $(tail -3 "$dir/log/rvpctl.log")"
		touch "$dir/initialised"
	fi

	node node-a a "$a_url" -gateway "127.0.0.1:$gw_a" -home home1 -router router-a
	node node-b b "$b_url" -gateway "127.0.0.1:$gw_b" -home home2 -router router-b
	wait_for "site a's gateway" 60 listening "$gw_a"
	wait_for "site b's gateway" 60 listening "$gw_b"

	cat <<-EOF
		Two sites and a hub run on loopback (data and logs in $dir):
		  hub     NATS $hub_url (JetStream domain hub: the directory)
		  site a  NATS $a_url, gateway http://127.0.0.1:$gw_a, home server home1: alice@example.test
		  site b  NATS $b_url, gateway http://127.0.0.1:$gw_b, home server home2: bob@example.test
		  password of alice, bob and admin: $pw   (NTLM, Windows domain EXAMPLE)
		Sign in as alice at 127.0.0.1:$gw_a and as bob at 127.0.0.1:$gw_b (in Pidgin: README, Sites),
		add each other and chat; messages and presence cross from one site to the other.
		  RVPCTL_NATS=$a_url RVPCTL_ADMIN=admin $bin/rvpctl users
		  deploy/sites/run.sh cut b     # site b's NATS server stops: alice sees bob offline, messages to him get 503
		  deploy/sites/run.sh mend b    # it is back: presence converges on both sides
		  deploy/sites/run.sh stop
	EOF
}

# halt NAME: stop a process this script started (SIGTERM, SIGKILL after
# 10 s) and return once it has exited, so that it can be started again.
halt() {
	local name=$1 pid
	if pid=$(pid_of "$name"); then
		kill -TERM "$pid"
		for _ in $(seq 100); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
			say "$name did not stop within 10 s of SIGTERM: killed"
		fi
		say "stopped $name"
	fi
	rm -f "$dir/run/$name.pid"
}

stop() {
	for name in node-a node-b dir-hub nats-a nats-b nats-hub; do
		halt "$name"
	done
}

status() {
	for name in nats-hub nats-a nats-b dir-hub node-a node-b; do
		if pid=$(pid_of "$name"); then
			echo "$name running (pid $pid)"
		else
			echo "$name stopped"
		fi
	done
}

case "$cmd" in
start) start ;;
stop) stop ;;
status) status ;;
cut)
	site=${2:?which site: a or b}
	pid_of "nats-$site" >/dev/null || die "nats-$site does not run"
	halt "nats-$site"
	;;
mend)
	site=${2:?which site: a or b}
	launch "nats-$site" "$bin/nats-server" -c "$dir/$site/nats.conf"
	wait_for "site $site's NATS server" 30 healthy "$(eval echo "\$mon_$site")"
	say "site $site's NATS server started again"
	;;
*) die "usage: run.sh start|stop|status|cut SITE|mend SITE" ;;
esac
