#!/usr/bin/env bash
# Build the images that compose/ and `make test-compose` use, without any container registry.
#
#   scripts/build-images.sh [--rebuild]
#
# 1. A stand-in base image: Debian bookworm (minbase) with python3, python3-venv, etcd-server
#    and etcd-client, made by debootstrap and `docker import`, then given /usr/local/bin/etcd,
#    /usr/local/bin/etcdctl and `python`. It is tagged as BOTH `python:3.11-slim` and
#    `quay.io/coreos/etcd:v3.5.33`, the names compose/ asks for (bookworm's python3 is 3.11; its
#    etcd is 3.4.23, not 3.5.33). A tag that already exists is kept, so a real image pulled
#    from a registry is never replaced; --rebuild replaces only tags that are stand-ins.
#    The debootstrapped root filesystem is cached as a tarball in $RINGSIDE_IMAGE_CACHE
#    (default /var/cache/ringside-images), so only the first run pays for debootstrap.
# 2. `ringside:<version>` from the Dockerfile, with wheels built here (`pip wheel .`). It is
#    rebuilt when the package sources, the Dockerfile or the base image changed since the
#    image was built (a digest kept in an image label), or with --rebuild.
#
# Needs a running Docker daemon (scripts/docker-up.sh) and, for step 1, root and debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

rebuild=no
for arg in "$@"; do
  case $arg in
    --rebuild) rebuild=yes ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build-images: unknown argument $arg" >&2; exit 2 ;;
  esac
done

cache=${RINGSIDE_IMAGE_CACHE:-/var/cache/ringside-images}
mirror=${RINGSIDE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
packages=python3,python3-venv,etcd-server,etcd-client,ca-certificates
standin_tags=(python:3.11-slim quay.io/coreos/etcd:v3.5.33)
standin_label=org.ringside.standin
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' sidecar/__init__.py)
ringside_tag=${RINGSIDE_IMAGE:-ringside:$version}
python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

say() { echo "build-images: $*" >&2; }
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
label_of() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
elapsed() { echo "$((SECONDS - $1)) s"; }

# ---- 1. the stand-in base image ---------------------------------------------------------------
rootfs_key=$(echo "$suite $packages $mirror" | sha256sum | cut -c1-12)
rootfs_tar=$cache/$suite-minbase-$rootfs_key.tar
standin=ringside-standin:$suite-$rootfs_key

make_rootfs() {
  local started=$SECONDS target
  mkdir -p "$cache"
  target=$(mktemp -d "$cache/rootfs.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$target'" EXIT
  say "debootstrap $suite (minbase + $packages) from $mirror"
  debootstrap --variant=minbase --include="$packages" "$suite" "$target" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$target"/var/lib/apt/lists/* "$target"/var/cache/apt/*.bin \
    "$target"/var/cache/apt/archives/*.deb "$target"/var/log/*.log "$target"/var/log/apt/*
  tar --numeric-owner -C "$target" -cf "$rootfs_tar.part" .
  mv "$rootfs_tar.part" "$rootfs_tar"
  rm -rf "$target"
  trap - EXIT
  say "root filesystem cached in $rootfs_tar ($(elapsed "$started"))"
}

needs_standin=no
for tag in "${standin_tags[@]}"; do
  if ! image_exists "$tag"; then
    needs_standin=yes
  elif [ "$rebuild" = yes ] && [ -n "$(label_of "$tag" "$standin_label")" ]; then
    needs_standin=yes
  fi
done

if [ "$needs_standin" = yes ]; then
  started=$SECONDS
  if [ "$rebuild" = yes ] || ! image_exists "$standin"; then
    [ -s "$rootfs_tar" ] || make_rootfs
    say "importing the root filesystem"
    docker import "$rootfs_tar" "$standin-rootfs" >/dev/null
    # The names the real images answer to: etcd and etcdctl in /usr/local/bin, python on PATH.
    # /var/lib/etcd is root's, as in the real etcd image, whose etcd runs as root: Debian's
    # package gives it (mode 0700) to its own etcd user, and a root without capabilities
    # (compose/voter.yml drops them all) could then not open the data dir inside it.
    DOCKER_BUILDKIT=0 docker build -q -t "$standin" - >/dev/null <<EOF
FROM $standin-rootfs
RUN ln -sf /usr/bin/etcd /usr/local/bin/etcd \\
 && ln -sf /usr/bin/etcdctl /usr/local/bin/etcdctl \\
 && ln -sf /usr/bin/python3 /usr/local/bin/python \\
 && chown root:root /var/lib/etcd && chmod 755 /var/lib/etcd
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 ETCDCTL_API=3
LABEL $standin_label="debian $suite minbase + $packages"
CMD ["python3"]
EOF
  fi
  for tag in "${standin_tags[@]}"; do
    if ! image_exists "$tag" || { [ "$rebuild" = yes ] && [ -n "$(label_of "$tag" "$standin_label")" ]; }; then
      docker tag "$standin" "$tag"
      say "tagged the stand-in as $tag"
    fi
  done
  say "stand-in base image ready ($(elapsed "$started"))"
fi

# ---- 2. ringside:<version> ----------------------------------------------------------------------
base_image=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
digest=$(
  {
    docker image inspect --format '{{.Id}}' "$base_image"
    find sidecar setup.cfg pyproject.toml Dockerfile .dockerignore -type f \
      -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
)
if [ "$rebuild" = no ] && [ "$(label_of "$ringside_tag" org.ringside.source-digest)" = "$digest" ]; then
  say "$ringside_tag is up to date"
  exit 0
fi
started=$SECONDS
rm -rf dist/wheels
say "building wheels for ringside and its dependencies (dist/wheels)"
"$python" -m pip wheel -q --disable-pip-version-check . -w dist/wheels
DOCKER_BUILDKIT=0 docker build -q --label org.ringside.source-digest="$digest" \
  --label "$standin_label=" \
  -t "$ringside_tag" . >/dev/null
say "built $ringside_tag ($(elapsed "$started"))"
