#!/bin/sh
# The etcd-certs service (docker-compose.yml, profile replicas), run as
# root on every `docker compose --profile replicas up`: makes etcd's
# certificates once with deploy/etcd/make-certs.sh into the etcd-pki
# volume (which only this service mounts: it holds the CAs' keys), then
# publishes
#
#   /out/etcd-tls      (etcd mounts it read-only at /etc/etcd/tls)
#       ca.crt server.crt server.key peer-ca.crt peer.crt peer.key, 0600, root's
#   /out/sumgate-etcd  (the replicas mount it read-only at /etc/sumgate/etcd)
#       ca.crt client.crt client.key (state.etcd.tls), owned by sumgate's
#       uid 65532: the folder 0700, the files 0600
#
# Each file is written beside its final name and renamed over it.
# deploy/compose_test.go runs this script, with openssl, its paths mapped
# to temporary folders.
set -eu

umask 077
sh /usr/local/share/sumgate/make-certs.sh /out/etcd-pki etcd,localhost,127.0.0.1 etcd

# publish SRC DEST OWNER
publish() {
	cp "$1" "$2.tmp"
	chown "$3" "$2.tmp"
	chmod 0600 "$2.tmp"
	mv -f "$2.tmp" "$2"
}

chown 0:0 /out/etcd-tls
chmod 0700 /out/etcd-tls
for f in ca.crt server.crt server.key peer-ca.crt peer.crt peer.key; do
	publish "/out/etcd-pki/$f" "/out/etcd-tls/$f" 0:0
done
chown 65532:65532 /out/sumgate-etcd
chmod 0700 /out/sumgate-etcd
for f in ca.crt client.crt client.key; do
	publish "/out/etcd-pki/$f" "/out/sumgate-etcd/$f" 65532:65532
done
echo "etcd-certs: published etcd's certificates and sumgate's client certificate"
