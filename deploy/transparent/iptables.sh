#!/bin/sh
# Redirect outbound HTTPS (TCP port 443) to sumgate's transparent listener,
# with iptables (nat table, REDIRECT), and exempt sumgate's own upstream
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

case $mode in
gateway) hook=PREROUTING; jump="-i $iface -p tcp --dport 443 -j $chain" ;;
local) hook=OUTPUT; jump="-p tcp --dport 443 -j $chain" ;;
*) echo "iptables.sh: mode must be gateway or local" >&2; exit 2 ;;
esac

down() {
	# shellcheck disable=SC2086
	while iptables -t nat -D $hook $jump 2>/dev/null; do :; done
	iptables -t nat -F "$chain" 2>/dev/null || true
	iptables -t nat -X "$chain" 2>/dev/null || true
}

case $action in
up)
	down
	iptables -t nat -N "$chain"
	if [ "$mark" != 0 ]; then
		iptables -t nat -A "$chain" -m mark --mark "$mark" -j RETURN
	fi
	if [ "$mode" = local ] && [ -n "$uid" ]; then
		iptables -t nat -A "$chain" -m owner --uid-owner "$uid" -j RETURN
	fi
	iptables -t nat -A "$chain" -p tcp --dport 443 -j REDIRECT --to-ports "$port"
	# shellcheck disable=SC2086
	iptables -t nat -A $hook $jump
	;;
down) down ;;
*) echo "iptables.sh: action must be up or down" >&2; exit 2 ;;
esac
