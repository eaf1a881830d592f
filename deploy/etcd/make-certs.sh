#!/bin/sh
# Makes the TLS certificates of an etcd cluster that holds sumgate's
# shared state (state.backend: etcd), with openssl alone: nothing is
# fetched. Used by the compose stack's etcd-certs service and, by hand,
# for the Kubernetes example (deploy/kubernetes/README.md, "Several
# replicas").
#
#   make-certs.sh DIR CLIENT_NAMES PEER_NAMES
#
# CLIENT_NAMES and PEER_NAMES are comma-separated DNS names and IP
# addresses: those the members are reached at by clients (port 2379) and
# by each other (port 2380). Two CAs, so that a client certificate can
# never join the cluster as a member:
#
#   ca.crt ca.key            the client CA: signs server.crt and client.crt;
#                            etcd --trusted-ca-file, sumgate state.etcd.tls.ca
#   server.crt server.key    the members' client-port certificate (server
#                            auth; client auth too, for etcdctl on a member)
#   client.crt client.key    sumgate's client certificate, CN=sumgate
#                            (client auth only): state.etcd.tls.cert, .key
#   peer-ca.crt peer-ca.key  the peer CA: etcd --peer-trusted-ca-file
#   peer.crt peer.key        the members' peer certificate (server and
#                            client auth)
#
# Keys are ECDSA P-256, PKCS#8, 0600 (umask 077). The CAs last ten years,
# the certificates two. Only missing files are made: run it again to
# finish an interrupted run; delete a certificate and its key to renew it
# under the same CA (then restart who uses it). Keep ca.key and
# peer-ca.key out of the cluster: they are needed only to issue more.
set -eu

if [ "$#" -ne 3 ] || [ -z "$1" ] || [ -z "$2" ] || [ -z "$3" ]; then
	echo "usage: make-certs.sh DIR CLIENT_NAMES PEER_NAMES (names comma-separated)" >&2
	exit 2
fi
dir=$1
client_names=$2
peer_names=$3

umask 077
mkdir -p "$dir"

# sans NAMES: the subjectAltName value for comma-separated names.
sans() {
	out=
	old_ifs=$IFS
	IFS=,
	for n in $1; do
		case $n in
		*:* | *[0-9].*[0-9].*[0-9].*[0-9]) kind=IP ;;
		*) kind=DNS ;;
		esac
		case $n in
		*[0-9a-zA-Z]*) ;;
		*) continue ;;
		esac
		out="$out${out:+,}$kind:$n"
	done
	IFS=$old_ifs
	printf '%s' "$out"
}

# ca NAME CN: a self-signed CA that signs certificates only.
ca() {
	[ -s "$dir/$1.crt" ] && [ -s "$dir/$1.key" ] && return 0
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/$1.key.tmp" -out "$dir/$1.crt.tmp" -days 3650 -subj "/CN=$2" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	mv -f "$dir/$1.key.tmp" "$dir/$1.key"
	mv -f "$dir/$1.crt.tmp" "$dir/$1.crt"
	echo "make-certs: made $dir/$1.crt ($2)"
}

# leaf NAME CA CN USAGE [SANS]: a certificate signed by CA.
leaf() {
	[ -s "$dir/$1.crt" ] && [ -s "$dir/$1.key" ] && return 0
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "extendedKeyUsage=$4"
		if [ -n "${5:-}" ]; then
			echo "subjectAltName=$5"
		fi
	} >"$dir/$1.ext"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/$1.key.tmp" -out "$dir/$1.csr" -subj "/CN=$3" 2>/dev/null
	openssl x509 -req -in "$dir/$1.csr" -CA "$dir/$2.crt" -CAkey "$dir/$2.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 730 -extfile "$dir/$1.ext" \
		-out "$dir/$1.crt.tmp" 2>/dev/null
	rm -f "$dir/$1.csr" "$dir/$1.ext"
	mv -f "$dir/$1.key.tmp" "$dir/$1.key"
	mv -f "$dir/$1.crt.tmp" "$dir/$1.crt"
	echo "make-certs: made $dir/$1.crt ($3)"
}

ca ca "sumgate etcd client CA"
ca peer-ca "sumgate etcd peer CA"
leaf server ca "etcd" "serverAuth,clientAuth" "$(sans "$client_names")"
leaf peer peer-ca "etcd peer" "serverAuth,clientAuth" "$(sans "$peer_names")"
leaf client ca "sumgate" "clientAuth"
