# The compose stack's collector: the pinned upstream contrib image, plus a
# probe for its health check. That image is built from scratch (no shell,
# no curl, no wget), and the collector has no command that asks its own
# health; sumgate's static binary does (`sumgate healthcheck -admin ADDR`
# asks http://ADDR/readyz and exits 0 on a 200). The "sumgate" build
# context is the sumgate service's image (docker-compose.yml:
# additional_contexts), so no second build and no other image is needed.
FROM otel/opentelemetry-collector-contrib:0.165.0
COPY --from=sumgate /usr/local/bin/sumgate /usr/local/bin/sumgate
# The span file's folder, owned by the collector's uid 10001 so that the
# audit-spans volume mounted there starts out writable by it: with no shell
# there is no mkdir, so copy the sumgate image's empty data folder (0700).
COPY --from=sumgate --chown=10001:10001 /var/lib/sumgate /var/lib/otelcol
