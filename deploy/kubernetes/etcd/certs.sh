#!/bin/sh
# Makes the certificates of the example etcd (this folder) and of
# sumgate's client, for the names the StatefulSet's members have:
#
#   deploy/kubernetes/etcd/certs.sh DIR [NAMESPACE]
#
# DIR must be outside the repository (it receives the CAs' keys);
# NAMESPACE is sumgate unless given; CLUSTER_DOMAIN (cluster.local) and
# MEMBERS (3) may be set in the environment. Then create the Secrets as
# ../README.md, "Several replicas", says. Run it again to make only what
# is missing; see ../../etcd/make-certs.sh.
set -eu

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
	echo "usage: certs.sh DIR [NAMESPACE]" >&2
	exit 2
fi
dir=$1
ns=${2:-sumgate}
domain=${CLUSTER_DOMAIN:-cluster.local}
members=${MEMBERS:-3}

client=etcd.$ns.svc
peer=
i=0
while [ "$i" -lt "$members" ]; do
	client="$client,etcd-$i.etcd.$ns.svc,etcd-$i.etcd.$ns.svc.$domain"
	peer="$peer${peer:+,}etcd-$i.etcd.$ns.svc,etcd-$i.etcd.$ns.svc.$domain"
	i=$((i + 1))
done
# etcdctl on a member itself; the peers' reverse lookups (PTR records of
# the headless Service) end in the wildcard's name.
client="$client,localhost,127.0.0.1"
peer="$peer,*.etcd.$ns.svc.$domain"

exec sh "$(dirname "$0")/../../etcd/make-certs.sh" "$dir" "$client" "$peer"
