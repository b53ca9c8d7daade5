# syntax=docker/dockerfile:1
#
# rproxy image: a release build on Debian bookworm, run as uid 10001 on debian:bookworm-slim.
#
#   docker build -t rproxy .
#   docker run --rm -p 80:80 -p 443:443 -p 127.0.0.1:9901:9901 \
#       -v "$PWD/proxy.yaml:/etc/rproxy/proxy.yaml:ro" -v rproxy-certs:/etc/rproxy/certs rproxy
#
# Needs BuildKit (the default builder since Docker 23): cache mounts and a bind mount from the
# build stage. See deploy/docker/README.md for compose, ports below 1024 and hot reload.

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
    cargo build --release --locked --bin rproxy \
    && mkdir -p /out \
    && cp target/release/rproxy /out/rproxy \
    && strip /out/rproxy

FROM ${RUNTIME_IMAGE}
# SETCAP=1 (default) gives the binary the file capability cap_net_bind_service=+ep, so the
# non-root user can bind 80/443 even where the runtime leaves net.ipv4.ip_unprivileged_port_start
# at 1024 (host networking, older runtimes). The catch: with that capability on the file, the
# kernel refuses to exec it (EPERM, "operation not permitted") in a container whose capability
# bounding set lacks NET_BIND_SERVICE, e.g. `--cap-drop ALL` without `--cap-add NET_BIND_SERVICE`,
# or OpenShift's restricted SCC. Build with `--build-arg SETCAP=0` for such platforms and listen
# on ports >= 1024 (or set the sysctl net.ipv4.ip_unprivileged_port_start=0).
ARG SETCAP=1
# One layer: certificates for ACME (rustls reads the system roots), the user, the directories,
# and the binary copied in from the build stage with its capability set. libcap2-bin (setcap)
# is purged again in the same layer, and the binary is not copied twice into the image.
# hadolint ignore=DL3008
RUN --mount=type=bind,from=build,source=/out,target=/out \
    set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    install -m 0755 /out/rproxy /usr/local/bin/rproxy; \
    if [ "$SETCAP" = 1 ]; then \
        apt-get install -y --no-install-recommends libcap2-bin; \
        setcap cap_net_bind_service=+ep /usr/local/bin/rproxy; \
        apt-get purge -y --auto-remove libcap2-bin; \
    fi; \
    rm -rf /var/lib/apt/lists/*; \
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
# Static certificates (<name>.crt + <name>.key) and ACME state (acme/): keep them across
# restarts, and share the volume between replicas.
VOLUME ["/etc/rproxy/certs"]

USER 10001:10001
WORKDIR /etc/rproxy
# 80: HTTP (and ACME HTTP-01), 443: HTTPS, 9901: admin (/healthz, /readyz, /metrics).
EXPOSE 80 443 9901
# SIGTERM: /readyz turns 503, in-flight requests get server.grace_period to finish, then exit 0.
# Give the container at least that long to stop (`docker stop -t`, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["rproxy"]
CMD ["-c", "/etc/rproxy/proxy.yaml"]
