#!/bin/sh
# Redirect outbound HTTPS (TCP port 443) to sumgate's transparent listener,
# with nftables, and exempt sumgate's own upstream connections so that they
# are not redirected back to it. The same modes and settings as
# iptables.sh; the rules live in their own table, so "down" removes
# exactly what "up" added.
#
#   nftables.sh gateway up|down   redirect what arrives on $SUMGATE_IFACE (prerouting)
#   nftables.sh local up|down     redirect locally generated traffic (output)
#
# Settings (environment):
#   SUMGATE_PORT   sumgate's transparent_listen port            (3130)
#   SUMGATE_IFACE  gateway: the client-facing interface         (eth1; "cni*" wildcards work)
#   SUMGATE_MARK   transparent.mark: sumgate's sockets carry it (0x5347, 0 = none)
#   SUMGATE_UID    local: sumgate's user, exempted by owner     (sumgate; empty = none)
#   SUMGATE_TABLE  the inet table the rules live in             (sumgate)
set -eu
mode=${1:?usage: nftables.sh gateway|local up|down}
action=${2:?usage: nftables.sh gateway|local up|down}
port=${SUMGATE_PORT:-3130}
iface=${SUMGATE_IFACE:-eth1}
mark=${SUMGATE_MARK:-0x5347}
uid=${SUMGATE_UID-sumgate}
table=${SUMGATE_TABLE:-sumgate}

case $mode in
gateway) hook=prerouting; match="iifname \"$iface\" tcp dport 443" ;;
local) hook=output; match="tcp dport 443" ;;
*) echo "nftables.sh: mode must be gateway or local" >&2; exit 2 ;;
esac

case $action in
up)
	nft delete table inet "$table" 2>/dev/null || true
	exempt=""
	if [ "$mark" != 0 ]; then
		exempt="$exempt
		meta mark $mark return"
	fi
	if [ "$mode" = local ] && [ -n "$uid" ]; then
		exempt="$exempt
		meta skuid $uid return"
	fi
	nft -f - <<NFT
table inet $table {
	chain to_sumgate {
		type nat hook $hook priority -100; policy accept;$exempt
		$match redirect to :$port
	}
}
NFT
	;;
down) nft delete table inet "$table" 2>/dev/null || true ;;
*) echo "nftables.sh: action must be up or down" >&2; exit 2 ;;
esac
