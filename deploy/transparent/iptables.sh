#!/bin/sh
# Redirect outbound HTTPS (TCP port 443) to sumgate's transparent listener,
# with iptables and ip6tables (nat table, REDIRECT), and exempt sumgate's own upstream
# connections so that they are not redirected back to it.
#
#   iptables.sh gateway up|down   clients route through this host: redirect
#                                 what arrives on $SUMGATE_IFACE (PREROUTING)
#   iptables.sh local up|down     this host's (or this pod's) own processes:
#                                 redirect locally generated traffic (OUTPUT),
#                                 for a Kubernetes node's host network, a
#                                 container host, or a sidecar in a pod's
#                                 network namespace
#
# Settings (environment):
#   SUMGATE_PORT   sumgate's transparent_listen port            (3130)
#   SUMGATE_IFACE  gateway: the client-facing interface         (eth1; "+" wildcards work: cni+)
#   SUMGATE_MARK   transparent.mark: sumgate's sockets carry it (0x5347, 0 = none)
#   SUMGATE_UID    local: sumgate's user, exempted by owner     (sumgate; empty = none)
#   SUMGATE_CHAIN  the chain these rules live in                (SUMGATE)
#   SUMGATE_IPV6   also IPv6, with ip6tables, when it is installed (1; 0 = IPv4 only)
#
# Loops: in gateway mode sumgate's own connections leave through OUTPUT and
# never traverse PREROUTING; the mark rule is a second guard. In local mode
# both the mark and the owner match exempt them; keep at least one.
set -eu
mode=${1:?usage: iptables.sh gateway|local up|down}
action=${2:?usage: iptables.sh gateway|local up|down}
port=${SUMGATE_PORT:-3130}
iface=${SUMGATE_IFACE:-eth1}
mark=${SUMGATE_MARK:-0x5347}
uid=${SUMGATE_UID-sumgate}
chain=${SUMGATE_CHAIN:-SUMGATE}
tools=iptables
if [ "${SUMGATE_IPV6:-1}" != 0 ] && command -v ip6tables >/dev/null 2>&1; then
	tools="iptables ip6tables"
fi

case $mode in
gateway) hook=PREROUTING; jump="-i $iface -p tcp --dport 443 -j $chain" ;;
local) hook=OUTPUT; jump="-p tcp --dport 443 -j $chain" ;;
*) echo "iptables.sh: mode must be gateway or local" >&2; exit 2 ;;
esac

down() {
	for t in $tools; do
		# shellcheck disable=SC2086
		while $t -t nat -D $hook $jump 2>/dev/null; do :; done
		$t -t nat -F "$chain" 2>/dev/null || true
		$t -t nat -X "$chain" 2>/dev/null || true
	done
}

case $action in
up)
	down
	for t in $tools; do
		$t -t nat -N "$chain"
		if [ "$mark" != 0 ]; then
			$t -t nat -A "$chain" -m mark --mark "$mark" -j RETURN
		fi
		if [ "$mode" = local ] && [ -n "$uid" ]; then
			$t -t nat -A "$chain" -m owner --uid-owner "$uid" -j RETURN
		fi
		$t -t nat -A "$chain" -p tcp --dport 443 -j REDIRECT --to-ports "$port"
		# shellcheck disable=SC2086
		$t -t nat -A $hook $jump
	done
	;;
down) down ;;
*) echo "iptables.sh: action must be up or down" >&2; exit 2 ;;
esac
