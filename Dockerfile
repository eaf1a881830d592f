# sumgate's container image.
#
#   docker build -t sumgate .
#   docker run -p 127.0.0.1:3128:3128 -p 127.0.0.1:3129:3129 -v sumgate-data:/var/lib/sumgate sumgate
#
# (Publish the ports on loopback, or on the one interface clients use:
# whoever reaches 3128 can use the gateway, and Docker's published ports
# bypass the host's INPUT firewall rules.)
#
# Build: a static binary (CGO_ENABLED=0), with the step-ca backend
# (SUMGATE_TAGS=step), since the compose stack and Kubernetes use step-ca;
# build with --build-arg SUMGATE_TAGS= for the smaller binary without it.
#
# The build context carries no .git (.dockerignore), so the version and
# revision are given, for 'sumgate version' and the OCI labels:
#
#   docker build --build-arg SUMGATE_VERSION=$(git describe --tags --always) \
#     --build-arg SUMGATE_REVISION=$(git rev-parse HEAD) -t sumgate .
#
# Or from a binary built outside, as a CI pipeline does (no Go toolchain
# image is pulled):
#
#   CGO_ENABLED=0 go build -trimpath -tags step -o dist/sumgate ./cmd/sumgate
#   docker build --build-arg BINARY=prebuilt -t sumgate .
#
# Bases: pin them by digest in your pipeline, e.g.
# --build-arg DEBIAN_IMAGE=debian:bookworm-slim@sha256:<digest>.
#
# Runtime: Debian slim, for the system CA roots and git, which the default
# vcs: verify runs to build the modules of direct git fetches (the same
# Debian git the tests run against). Not distroless: it has no git.
#
# The final stage runs nothing (no RUN): it only copies the binary and the
# configuration onto RUNTIME, so deploy/image_test.go builds it on a base
# it makes itself, with no pull.
ARG GO_VERSION=1.26.8
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG BINARY=build
ARG RUNTIME=runtime

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG SUMGATE_TAGS=step
ARG SUMGATE_VERSION=
ARG SUMGATE_REVISION=
RUN CGO_ENABLED=0 go build -trimpath -tags "${SUMGATE_TAGS}" \
      -ldflags "-s -w -X main.linkedVersion=${SUMGATE_VERSION} -X main.linkedRevision=${SUMGATE_REVISION}" \
      -o /out/sumgate ./cmd/sumgate

FROM scratch AS prebuilt
COPY dist/sumgate /out/sumgate

FROM ${DEBIAN_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 sumgate \
 && useradd --uid 65532 --gid 65532 --home-dir /var/lib/sumgate --no-create-home --shell /usr/sbin/nologin sumgate \
 && mkdir -p /var/lib/sumgate \
 && chown 65532:65532 /var/lib/sumgate \
 && chmod 0700 /var/lib/sumgate

FROM ${BINARY} AS binary

FROM ${RUNTIME}
COPY --from=binary /out/sumgate /usr/local/bin/sumgate
COPY deploy/docker/sumgate.yaml /etc/sumgate/sumgate.yaml
USER 65532:65532
VOLUME /var/lib/sumgate
# 3128: the proxy (HTTPS_PROXY=http://<host>:3128); 3129: admin (/metrics, /healthz, /readyz, /ca.pem).
EXPOSE 3128 3129
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
  CMD ["sumgate", "healthcheck", "-config", "/etc/sumgate/sumgate.yaml"]
ENTRYPOINT ["sumgate"]
CMD ["run", "-config", "/etc/sumgate/sumgate.yaml"]
ARG SUMGATE_VERSION=
ARG SUMGATE_REVISION=
LABEL org.opencontainers.image.title="sumgate" \
      org.opencontainers.image.version="${SUMGATE_VERSION}" \
      org.opencontainers.image.revision="${SUMGATE_REVISION}" \
      org.opencontainers.image.description="Corporate egress gateway for Go modules: intercepts TLS, verifies every module against the Go checksum database, records every request" \
      org.opencontainers.image.source="https://github.com/sumgate/sumgate" \
      org.opencontainers.image.documentation="https://github.com/sumgate/sumgate#readme"
