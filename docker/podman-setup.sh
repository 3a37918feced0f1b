#!/usr/bin/env bash
# Podman as the container engine for building and testing docker/Dockerfile on a machine with no
# Docker engine and no reachable image registry (Debian 12, as root, no systemd):
#
#   docker/podman-setup.sh     # install podman if missing, configure it, create the base image
#
# - installs podman, buildah, runc and debootstrap with apt where missing;
# - writes /etc/containers/containers.conf: runc (crun rejects this host's cgroup layout) and
#   ulimits the host allows (raising rlimits is not permitted here);
# - creates the base image the Dockerfile starts FROM, debian:bookworm-slim, with debootstrap
#   and `podman import`, because no registry can be pulled from.
#
# Idempotent: a second run only checks. No daemon is started: the tests call `podman` directly.
set -euo pipefail

BASE_IMAGE=docker.io/library/debian:bookworm-slim
PACKAGES=(podman buildah runc debootstrap)

log() { echo "[podman-setup] $*" >&2; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_config() {
  mkdir -p /etc/containers
  local conf=/etc/containers/containers.conf
  local want='[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"'
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    log "writing $conf"
    printf '%s\n' "$want" > "$conf"
  fi
}

create_base_image() {
  if podman image exists "$BASE_IMAGE"; then
    return
  fi
  log "creating $BASE_IMAGE with debootstrap (no registry to pull it from)"
  local rootfs
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' RETURN
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  # What the registry's image has and debootstrap's lacks: the updates sources, and no leftover
  # package lists or downloaded .debs.
  printf '%s\n' 'deb http://deb.debian.org/debian bookworm-updates main' \
    'deb http://deb.debian.org/debian-security bookworm-security main' >> "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
}

install_packages
write_config
create_base_image
podman run --rm --pull=never "$BASE_IMAGE" true  # the engine runs a container
log "ready: $(podman --version), base image $BASE_IMAGE"
