#!/bin/bash
# The step-ca service's entrypoint (docker-compose.yml): on the first start,
# before the image's own entrypoint initialises the CA, generate the
# password it is given through DOCKER_STEPCA_INIT_PASSWORD_FILE. With that
# variable the image's `step ca init` encrypts the CA's keys and the JWK
# provisioner's key with this one password, which it then keeps at
# $PWDPATH (the same file); without it, it would generate a provisioner
# password, print it once and shred it, and sumgate could not sign in.
# No password is ever checked into the repository.
set -euo pipefail

pw="${DOCKER_STEPCA_INIT_PASSWORD_FILE:?}"
if [ ! -f "${CONFIGPATH:?}" ] && [ ! -s "$pw" ]; then
	umask 077
	mkdir -p "$(dirname "$pw")"
	head -c 32 /dev/urandom | base64 > "$pw.tmp"
	mv "$pw.tmp" "$pw"
fi
exec /bin/bash /entrypoint.sh "$@"
