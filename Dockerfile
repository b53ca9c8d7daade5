# rproxy image: a release build on Debian bookworm, run as uid 10001 on debian:bookworm-slim.
#
#   docker build -t rproxy .
#   docker run --rm -p 80:80 -p 443:443 -p 127.0.0.1:9901:9901 \
#       -v "$PWD/proxy.yaml:/etc/rproxy/proxy.yaml:ro" -v rproxy-certs:/etc/rproxy/certs rproxy
#
# Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 before): cache mounts, a
# secret and a bind mount from the build stage. No `# syntax=` line: that would make every build
# fetch a Dockerfile frontend from a registry, and fail offline. Base images are build args
# (RUST_IMAGE, RUNTIME_IMAGE), so a mirror's or a locally made image can stand in.
# Behind a TLS-intercepting proxy, give cargo its CA as a secret (it never reaches the image):
#   docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt -t rproxy .
# See deploy/docker/README.md for compose, ports below 1024 and hot reload.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# cmake: pingora builds zlib-ng with it. (Debian package versions are left unpinned on purpose:
# bookworm only takes security fixes, and a pinned version disappears from the mirrors.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what `cargo build` reads: no tests, examples or deploy files, so editing those does not
# invalidate this layer. (Cargo.toml declares the bench, so benches/ must be there.)
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then \
        export CARGO_HTTP_CAINFO=/run/secrets/ca-certificates; \
    fi \
    && cargo build --release --locked --bin rproxy \
    && mkdir -p /out \
    && cp target/release/rproxy /out/rproxy \
    && strip /out/rproxy \
    && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

FROM ${RUNTIME_IMAGE}
# SETCAP=0 (default): the binary carries no file capability, so it starts under any capability
# set (`--cap-drop ALL`, OpenShift's restricted SCC). The non-root user binds 80/443 because
# Docker (20.10+) and Podman set net.ipv4.ip_unprivileged_port_start=0 in a container's own
# network namespace; where that does not hold (`--network host` on a host at 1024, older
# runtimes), rproxy says at start, in words, which listen address it may not bind and why.
# SETCAP=1 gives the binary cap_net_bind_service=+ep for those cases, with a catch: the kernel
# then refuses to exec it at all (EPERM, "operation not permitted", before rproxy can say
# anything) in a container whose bounding set lacks NET_BIND_SERVICE: keep
# `--cap-add NET_BIND_SERVICE` with `--cap-drop ALL` for such an image.
ARG SETCAP=0
# One layer: the system roots for ACME (rustls reads /etc/ssl/certs/ca-certificates.crt; the
# build stage's Debian bundle is copied, which keeps openssl and apt's work out of the image,
# and never the host CA given to cargo as a secret), the user, the directories, and the binary
# copied in from the build stage. With SETCAP=1, libcap2-bin (setcap) is installed and purged
# again in this same layer.
# hadolint ignore=DL3008
RUN --mount=type=bind,from=build,source=/out,target=/out \
    set -eux; \
    install -m 0755 /out/rproxy /usr/local/bin/rproxy; \
    install -D -m 0644 /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt; \
    if [ "$SETCAP" = 1 ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends libcap2-bin; \
        setcap cap_net_bind_service=+ep /usr/local/bin/rproxy; \
        apt-get purge -y --auto-remove libcap2-bin; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi; \
    groupadd --system --gid 10001 rproxy; \
    useradd --system --uid 10001 --gid rproxy --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin rproxy; \
    install -d -m 0755 /etc/rproxy; \
    install -d -m 0750 -o rproxy -g rproxy /etc/rproxy/certs; \
    rproxy --version

# The default configuration (the one docker-compose.yml uses); mount your own over it, or mount a
# directory holding proxy.yaml at /etc/rproxy. rproxy reloads it on change and on SIGHUP
# (`docker kill -s HUP <container>`).
COPY deploy/docker/proxy.yaml /etc/rproxy/proxy.yaml
# Static certificates (<name>.crt + <name>.key) and ACME state (acme/) live in /etc/rproxy/certs.
# No VOLUME here: it would leave an anonymous volume behind every `docker run` without --rm.
# Mount a named volume there to keep them across restarts (`-v rproxy-certs:/etc/rproxy/certs`),
# and share it between replicas.

USER 10001:10001
WORKDIR /etc/rproxy
# 80: HTTP (and ACME HTTP-01), 443: HTTPS, 9901: admin (/healthz, /readyz, /metrics).
EXPOSE 80 443 9901
# SIGTERM: /readyz turns 503, in-flight requests get server.grace_period to finish, then exit 0.
# Give the container at least that long to stop (`docker stop -t`, compose stop_grace_period).
STOPSIGNAL SIGTERM
# Healthy once /readyz answers 200 (configuration loaded, listeners bound, first probe round
# done); unhealthy while draining. A configuration elsewhere: `rproxy healthcheck -c <file>`.
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["rproxy", "healthcheck", "-c", "/etc/rproxy/proxy.yaml", "--timeout", "3"]
ENTRYPOINT ["rproxy"]
CMD ["-c", "/etc/rproxy/proxy.yaml"]
