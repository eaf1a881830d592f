#!/usr/bin/env bash
# bench/peers.sh: race sumgate against Squid (ssl-bump) and mitmproxy.
#
#   bash bench/peers.sh [rounds]      # rounds: default 7
#
# Installs Debian's squid-openssl and mitmproxy with apt-get if they are
# missing (as root, or through sudo), then runs TestPeerRace
# (bench/peers_test.go): `go mod download` of 20 small modules and two of
# 32 MiB from the hermetic test world on 127.0.0.1, direct and through
# sumgate (cold, warm, warm with its cache off), Squid with `cache deny all`
# and mitmdump. Every route runs once per round, in a shuffled order; the
# table gives each route's time divided by the same round's direct time
# (median and min–max) and its median time. About 15 s a round on 2 cores,
# plus a minute to build and prime. It starts and stops every process
# itself; nothing stays running, and nothing outside temporary folders is
# written but the packages. Timings only: it is not part of CI, and
# nothing passes or fails on a time.
set -euo pipefail

rounds=${1:-7}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
	echo "usage: bash bench/peers.sh [rounds]  (rounds: a whole number, at least 1)" >&2
	exit 2
fi
cd "$(dirname "$0")/.."

installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
need=()
for pkg in squid-openssl mitmproxy; do
	installed "$pkg" || need+=("$pkg")
done
if ((${#need[@]})); then
	sudo=()
	[[ $(id -u) == 0 ]] || sudo=(sudo)
	echo "installing ${need[*]} with apt-get" >&2
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
	# Where systemd runs, the package starts a system-wide squid on port
	# 3128; the race runs its own, so stop the one this script installed.
	if [[ " ${need[*]} " == *" squid-openssl "* ]] && [[ -d /run/systemd/system ]]; then
		"${sudo[@]}" systemctl disable --now squid.service >&2 || true
	fi
fi

set -x
go test -v -count=1 -timeout 60m -run '^TestPeerRace$' ./bench/ \
	-args -sumgate.peers -sumgate.require-peers=true -sumgate.rounds="$rounds" -sumgate.large-mib=32
