#!/usr/bin/env bash
# Makes a machine ready for tests/docker.rs, and says which base images to build with.
#
# - installs docker.io, docker-compose and debootstrap when missing (as root, or with sudo -n);
# - starts dockerd when none answers (log: $RPROXY_DOCKER_STATE/dockerd.log);
# - picks base images: the usual ones (rust:1-bookworm, debian:bookworm-slim, python:3.11-slim)
#   when present or pullable, else images made here with debootstrap (local/*, kept for the next
#   run: made once, ~3 minutes).
#
# Last line on stdout: `RUST_IMAGE=... RUNTIME_IMAGE=... PYTHON_IMAGE=...`.
# Exit 77 (with the reason on stderr) when Docker cannot run on this machine; any other non-zero
# exit is a failure.
set -euo pipefail

STATE="${RPROXY_DOCKER_STATE:-/var/tmp/rproxy-docker}"
mkdir -p "$STATE"
SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO="sudo -n"

skip() {
    echo "docker cannot run here: $*" >&2
    exit 77
}
log() { echo "prepare: $*" >&2; }

# --- packages ---------------------------------------------------------------------------------
need=()
[[ -x /usr/bin/docker && -x /usr/sbin/dockerd ]] || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || need+=(debootstrap)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q >&2 || skip "apt-get update failed"
    $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >&2 \
        || skip "could not install ${need[*]}"
fi
# Debian's CLI: it carries BuildKit's client itself (a newer CLI wants the buildx plugin).
DOCKER=/usr/bin/docker

# --- the engine -------------------------------------------------------------------------------
if ! timeout 20 $DOCKER info >/dev/null 2>&1; then
    log "no Docker engine answers: starting dockerd"
    $SUDO sh -c "nohup dockerd >'$STATE/dockerd.log' 2>&1 </dev/null &"
    for _ in $(seq 60); do
        timeout 5 $DOCKER info >/dev/null 2>&1 && break
        sleep 1
    done
    timeout 20 $DOCKER info >/dev/null 2>&1 \
        || skip "dockerd did not start: $(tail -n 5 "$STATE/dockerd.log" 2>/dev/null | tr '\n' ' ')"
fi
# A container must start at all (cgroups, namespaces, seccomp): checked with the first image.

# --- base images ------------------------------------------------------------------------------
have() { $DOCKER image inspect "$1" >/dev/null 2>&1; }

UP_RUST=rust:1-bookworm UP_RUNTIME=debian:bookworm-slim UP_PYTHON=python:3.11-slim
LOCAL_RUST=local/rust:bookworm LOCAL_RUNTIME=local/debian:bookworm-slim
LOCAL_PYTHON=local/python:3.11-bookworm

if have $UP_RUST && have $UP_RUNTIME && have $UP_PYTHON; then
    echo "RUST_IMAGE=$UP_RUST RUNTIME_IMAGE=$UP_RUNTIME PYTHON_IMAGE=$UP_PYTHON"
    exit 0
fi
if ! { have $LOCAL_RUST && have $LOCAL_RUNTIME && have $LOCAL_PYTHON; }; then
    if timeout 30 $DOCKER pull -q $UP_RUNTIME >/dev/null 2>&1 \
        && timeout 600 $DOCKER pull -q $UP_RUST >/dev/null 2>&1 \
        && timeout 300 $DOCKER pull -q $UP_PYTHON >/dev/null 2>&1; then
        echo "RUST_IMAGE=$UP_RUST RUNTIME_IMAGE=$UP_RUNTIME PYTHON_IMAGE=$UP_PYTHON"
        exit 0
    fi
    log "no image registry answers: making local base images"
fi

# debian:bookworm-slim's like: minbase, without docs, man pages, locales or apt's lists.
make_runtime() {
    local root="$STATE/rootfs"
    $SUDO rm -rf "$root"
    log "debootstrap bookworm (minbase)"
    $SUDO debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >&2 \
        || { tail -n 20 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null; return 1; }
    $SUDO tee "$root/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
    $SUDO tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'CFG'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
CFG
    $SUDO sh -c "cd '$root' && find usr/share/doc -mindepth 2 ! -name copyright -delete 2>/dev/null; \
        rm -rf usr/share/man/* usr/share/info/* var/lib/apt/lists/* var/cache/apt/*.bin \
            var/cache/apt/archives/*.deb var/log/* debootstrap; \
        find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +"
    $SUDO tar -C "$root" -c . | $DOCKER import --change 'CMD ["bash"]' - $LOCAL_RUNTIME >&2
    $SUDO rm -rf "$root"
}

# rust:1-bookworm's like: gcc, make, cmake, pkg-config, and this machine's own Rust toolchain
# (no toolchain can be downloaded here), at /usr/local/rust, with CARGO_HOME=/usr/local/cargo.
make_rust() {
    local ctx="$STATE/rust-context" sysroot
    sysroot="$(rustc --print sysroot)"
    rm -rf "$ctx" && mkdir -p "$ctx/rust/bin" "$ctx/rust/lib/rustlib"
    cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$ctx/rust/bin/"
    cp -a "$sysroot"/lib/*.so* "$ctx/rust/lib/"
    cp -a "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu" "$ctx/rust/lib/rustlib/"
    rm -rf "$ctx/rust/lib/rustlib/x86_64-unknown-linux-gnu/analysis"
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $LOCAL_RUNTIME
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev make cmake \
    pkg-config ca-certificates && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
DOCKERFILE
    log "building $LOCAL_RUST (this machine's $(rustc --version))"
    DOCKER_BUILDKIT=1 $DOCKER build -q --network host -t $LOCAL_RUST "$ctx" >&2
    rm -rf "$ctx"
}

# python:3.11-slim's like: Debian's Python 3.11 with pip, allowed to install system-wide.
make_python() {
    local ctx="$STATE/python-context"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $LOCAL_RUNTIME
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
    python-is-python3 ca-certificates && rm -rf /var/lib/apt/lists/*
ENV PIP_BREAK_SYSTEM_PACKAGES=1
CMD ["python3"]
DOCKERFILE
    log "building $LOCAL_PYTHON"
    DOCKER_BUILDKIT=1 $DOCKER build -q --network host -t $LOCAL_PYTHON "$ctx" >&2
    rm -rf "$ctx"
}

have $LOCAL_RUNTIME || make_runtime
have $LOCAL_RUST || make_rust
have $LOCAL_PYTHON || make_python
echo "RUST_IMAGE=$LOCAL_RUST RUNTIME_IMAGE=$LOCAL_RUNTIME PYTHON_IMAGE=$LOCAL_PYTHON"
