#!/bin/bash
# The step-ca service's entrypoint (docker-compose.yml), in place of the
# image's own: on the first start (no ca.json yet) it initialises the CA
# itself, then runs the image's command (step-ca). The image's entrypoint
# is never run: its initialisation prints the provisioner's password to
# the container's log ("Your CA administrative password is: ...") even
# when it is given a password file (DOCKER_STEPCA_INIT_PASSWORD_FILE), and
# with one it encrypts the CA's keys and the provisioner's with that same
# password.
#
# Two random passwords, generated here, never printed and never checked
# into the repository, each in a file only step-ca's user can read:
#   /home/step/secrets/password              the CA's keys (root and
#       intermediate): step-ca's --password-file ($PWDPATH); it never
#       leaves this volume
#   /home/step/secrets/provisioner-password  the JWK provisioner's key,
#       the only one sumgate needs: ca-init.sh copies it for sumgate
# deploy/compose_test.go runs this script with a stand-in `step` and
# checks the flags it passes, the files' modes and that no password is
# printed.
set -euo pipefail

export STEPPATH=/home/step

# newpassword FILE: 32 random bytes, base64, written beside FILE and then
# renamed over it (umask 077: 0600).
newpassword() {
	head -c 32 /dev/urandom | base64 | tr -d '\n' > "$1.tmp"
	if [ ! -s "$1.tmp" ]; then
		echo "step-ca-start: could not generate $1" >&2
		exit 1
	fi
	mv -f "$1.tmp" "$1"
}

if [ ! -f /home/step/config/ca.json ]; then
	umask 077
	mkdir -p /home/step/secrets
	newpassword /home/step/secrets/password
	newpassword /home/step/secrets/provisioner-password
	# Every flag that makes `step ca init` ask nothing (no terminal here).
	# --dns: the names sumgate (ca.step.url) and the health check use.
	step ca init \
		--deployment-type standalone \
		--name "sumgate compose CA" \
		--dns step-ca --dns localhost \
		--address :9000 \
		--provisioner sumgate \
		--password-file /home/step/secrets/password \
		--provisioner-password-file /home/step/secrets/provisioner-password
	umask 022
fi
exec "$@"
