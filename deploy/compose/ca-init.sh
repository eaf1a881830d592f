#!/bin/sh
# The ca-init service (docker-compose.yml), run as root once step-ca is
# healthy, on every `docker compose up`: it publishes what sumgate and the
# clients need from step-ca's volume (mounted read-only at /home/step).
#
#   /out/sumgate-ca  (sumgate mounts it read-only at /etc/sumgate/ca)
#       root_ca.crt             the root (ca.step.root)
#       provisioner-password    the JWK provisioner's password (ca.step.password_file)
#     owned by sumgate's uid 65532: the folder 0700, the files 0600, since
#     sumgate refuses a password file that group or others can read.
#   /out/ca-root     (clients mount it read-only)
#       root_ca.crt             the root alone, 0644
#
# The password that decrypts the CA's keys (/home/step/secrets/password)
# is not copied: sumgate only signs in to the provisioner.
#
# Each file is written beside its final name and renamed over it, so that
# a reader never sees half a file. deploy/compose_test.go runs this script
# with its paths mapped to temporary folders.
set -eu

root=/home/step/certs/root_ca.crt
password=/home/step/secrets/provisioner-password # written by step-ca-start.sh
for f in "$root" "$password"; do
	if [ ! -s "$f" ]; then
		echo "ca-init: $f is missing or empty: has step-ca been initialised by deploy/compose/step-ca-start.sh? (A CA made by an older version of this stack has no separate provisioner password: docker compose down -v makes a new one.)" >&2
		exit 1
	fi
done

# publish SRC DEST MODE OWNER
publish() {
	cp "$1" "$2.tmp"
	chown "$4" "$2.tmp"
	chmod "$3" "$2.tmp"
	mv -f "$2.tmp" "$2"
}

umask 077
chown 65532:65532 /out/sumgate-ca
chmod 0700 /out/sumgate-ca
publish "$root" /out/sumgate-ca/root_ca.crt 0600 65532:65532
publish "$password" /out/sumgate-ca/provisioner-password 0600 65532:65532

chown 0:0 /out/ca-root
chmod 0755 /out/ca-root
publish "$root" /out/ca-root/root_ca.crt 0644 0:0

echo "ca-init: published the root ($(step certificate fingerprint "$root")) and the provisioner password"
