#!/usr/bin/env bash
# A local stand-in for python:3.11-slim, made offline from Debian's own packages (no container
# registry needed): Debian bookworm's python3 (3.11) with a virtual environment at /opt/venv
# first on PATH, so that `python`, `python3` and `pip` in a Dockerfile mean the same as in the
# official image (pip installs as root into a root-owned prefix, not into Debian's externally
# managed /usr). Then:
#   podman build --build-arg BASE=localhost/imgclf-base:bookworm ... -f containers/Dockerfile .
#
#   containers/local-base.sh [--force]     (as root, after containers/podman-setup.sh)
#
# Idempotent: nothing is done when the image exists (--force rebuilds it). The root fs tarball
# stays in build/local-base/ (git-ignored) until the import succeeds.
# Environment: IMGCLF_BASE_IMAGE (the tag), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, SUITE.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMGCLF_BASE_IMAGE:-localhost/imgclf-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
WORK=build/local-base
# python3-venv brings pip through ensurepip (python3-pip-whl), so python3-pip itself is not
# needed; passwd (useradd) is in minbase already, listed because the Dockerfile needs it.
PACKAGES=python3,python3-venv,ca-certificates,passwd

die() {
  echo "local-base: $*" >&2
  exit 1
}

command -v podman >/dev/null 2>&1 || die "podman is missing (run containers/podman-setup.sh)"
command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is missing (run containers/podman-setup.sh)"
if [ "${1:-}" != --force ] && podman image exists "$IMAGE"; then
  echo "local-base: $IMAGE exists ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes); --force rebuilds it"
  exit 0
fi

mkdir -p "$WORK"
tarball=$WORK/rootfs-$SUITE.tar
start=$(date +%s)
# The hooks' "$1" (the root fs) is mmdebstrap's, not this shell's:
# shellcheck disable=SC2016
# Recommends stay out (python3-venv recommends nothing we need); docs, man pages and locales
# are excluded as in the slim images; apt's lists and caches are emptied in the image.
mmdebstrap --variant=minbase --include="$PACKAGES" \
  --aptopt='APT::Install-Recommends "false"' \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
  --customize-hook='chroot "$1" /opt/venv/bin/python -m pip --version' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log' \
  "$SUITE" "$tarball" \
  "deb $MIRROR $SUITE main" \
  "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY $SUITE-security main" </dev/null ||
  die "mmdebstrap failed (a Debian mirror must be reachable: $MIRROR)"
made=$(date +%s)

podman import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV VIRTUAL_ENV=/opt/venv' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "Debian $SUITE minbase with $PACKAGES and /opt/venv (containers/local-base.sh)" \
  "$tarball" "$IMAGE" >/dev/null || die "podman import of $tarball failed"
rm -f "$tarball"

podman run --rm "$IMAGE" sh -c 'python --version && pip --version && command -v useradd' ||
  die "$IMAGE does not run python, pip and useradd"
echo "local-base: $IMAGE made in $((made - start))s (mmdebstrap) + $(($(date +%s) - made))s (import); $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
