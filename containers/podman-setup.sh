#!/usr/bin/env bash
# Podman on a Debian (bookworm) machine, as root, for building and running the step images
# offline (containers/local-base.sh, containers/Dockerfile) and for kfp.local.DockerRunner.
#
#   containers/podman-setup.sh [setup]            install podman, write containers.conf, run a
#                                                 smoke-test container (idempotent)
#   containers/podman-setup.sh conf               only write containers.conf
#   containers/podman-setup.sh check              only the smoke test
#   containers/podman-setup.sh start SOCK [PID]   serve the Docker-compatible API on unix://SOCK
#                                                 in the background (pid file: PID, default
#                                                 SOCK.pid; log: SOCK.log)
#   containers/podman-setup.sh stop SOCK [PID]    stop that service
#
# After `start`: DOCKER_HOST=unix://SOCK for docker-py (kfp.local.DockerRunner). The steps run
# as uid 1000, so DockerRunner's pipeline_root must be writable by that uid; and a container
# that exits within about a second can be removed (auto_remove) before kfp reads its logs,
# which podman 4.3 answers with a 500, not the 404 kfp expects.
# PODMAN_SETUP_CONF: another containers.conf to write (default /etc/containers/containers.conf).
# Every failure prints "podman-setup: cannot ...: REASON" on stderr and exits non-zero (2 when
# podman cannot be set up here at all), so that callers can go on without containers.
#
# What this machine needs (measured on a Firecracker VM with cgroup v1, kernel overlayfs):
#   - runc, not crun: crun's container setup is refused in the VM;
#   - cgroup_manager = "cgroupfs": no systemd as PID 1;
#   - default_ulimits lower than the host's: with the host's own limits the setup is refused;
#   - netavark (network_backend) + iptables for the default bridge network, which docker-py's
#     containers.run uses (Debian's podman 4.3 would pick CNI, whose plugins are not installed);
#   - rootful storage on kernel overlayfs: no fuse-overlayfs, uidmap or slirp4netns as root.
set -euo pipefail

CONF=${PODMAN_SETUP_CONF:-/etc/containers/containers.conf}
PACKAGES=(podman runc conmon netavark aardvark-dns iptables catatonit mmdebstrap)

die() { # die CODE MESSAGE
  echo "podman-setup: $2" >&2
  exit "$1"
}

need_root() {
  [ "$(id -u)" -eq 0 ] || die 2 "cannot set up podman: run as root (rootless podman is not set up by this script)"
}

install_packages() {
  command -v apt-get >/dev/null 2>&1 || die 2 "cannot install podman: no apt-get (this script is for Debian)"
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "podman-setup: installing ${missing[*]}"
  local log=/tmp/podman-setup-apt.log
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die 2 "cannot install ${missing[*]} with apt-get (log: $log)"
  fi
}

# Sets KEY = VALUE in [SECTION] of a TOML file, keeping every other line: an existing
# uncommented KEY (a multi-line array included) is replaced, a missing one is added under its
# section header, a missing section is appended.
write_conf() {
  mkdir -p "$(dirname "$CONF")"
  [ -f "$CONF" ] || printf '# Written by imgclf containers/podman-setup.sh; other settings are kept.\n' >"$CONF"
  /usr/bin/python3 - "$CONF" <<'PY' || die 2 "cannot write $CONF"
import re, sys, tomllib

path = sys.argv[1]
wanted = {
    "engine": {"runtime": '"runc"', "cgroup_manager": '"cgroupfs"'},
    "containers": {"default_ulimits": '["nofile=4096:4096", "nproc=4096:4096"]'},
    # Debian's podman 4.3 otherwise picks CNI (its /etc/cni/net.d/87-podman-bridge.conflist)
    # without the CNI plugins installed.
    "network": {"network_backend": '"netavark"'},
}
with open(path) as f:
    lines = f.read().splitlines()
out, section, done, i = [], None, set(), 0
def close(section):
    """Keys of the section just left that were not in it go at its end, before blank lines."""
    blanks = []
    while out and not out[-1].strip():
        blanks.append(out.pop())
    out.extend(f"{k} = {v}" for k, v in wanted.get(section, {}).items() if (section, k) not in done)
    done.update((section, k) for k in wanted.get(section, {}))
    out.extend(blanks)


header = re.compile(r"^\s*\[([A-Za-z0-9_.-]+)\]\s*(#.*)?$")
while i < len(lines):
    line = lines[i]
    m = header.match(line)
    if m:
        close(section)
        section = m.group(1)
        out.append(line)
        i += 1
        continue
    km = re.match(r"^\s*([A-Za-z0-9_-]+)\s*=(.*)$", line)
    if km and section in wanted and km.group(1) in wanted[section]:
        key, rest = km.group(1), km.group(2).split("#")[0].strip()
        if rest.startswith("[") and rest.count("[") > rest.count("]"):
            depth = rest.count("[") - rest.count("]")
            while depth > 0 and i + 1 < len(lines):  # a multi-line array: drop it whole
                i += 1
                body = lines[i].split("#")[0]
                depth += body.count("[") - body.count("]")
        out.append(f"{key} = {wanted[section][key]}")
        done.add((section, key))
        i += 1
        continue
    out.append(line)
    i += 1
close(section)
for sec, keys in wanted.items():
    missing = [k for k in keys if (sec, k) not in done]
    if missing:
        out += ["", f"[{sec}]"] + [f"{k} = {keys[k]}" for k in missing]
text = "\n".join(out) + "\n"
conf = tomllib.loads(text)  # refuse to write a file podman could not read
assert conf["engine"]["runtime"] == "runc" and conf["engine"]["cgroup_manager"] == "cgroupfs"
with open(path) as f:
    if f.read() == text:
        sys.exit(0)
with open(path + ".new", "w") as f:
    f.write(text)
import os
os.replace(path + ".new", path)
print(f"podman-setup: wrote {path}")
PY
}

# A container from a throwaway root fs (the host's /bin/sh and its libraries): no image and no
# registry needed, yet it goes through the runtime, the cgroups, the ulimits and the network.
smoke_test() {
  command -v podman >/dev/null 2>&1 || die 2 "cannot run containers: podman is not installed"
  local dir lib out
  dir=$(mktemp -d /tmp/podman-setup-rootfs.XXXXXX)
  trap 'rm -rf "$dir"' RETURN
  mkdir -p "$dir/bin" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/etc" "$dir/tmp"
  cp /bin/sh "$dir/bin/sh"
  for lib in $(ldd /bin/sh | grep -o '/[^ ]*'); do
    mkdir -p "$dir$(dirname "$lib")" && cp "$lib" "$dir$lib"
  done
  if ! out=$(podman run --rm --rootfs "$dir" /bin/sh -c \
      'ulimit -n; while read -r l; do case $l in eth0:*) echo bridge;; esac; done </proc/net/dev' \
      2>"$dir.err"); then
    cat "$dir.err" >&2
    rm -f "$dir.err"
    die 2 "cannot run a container with podman (runtime, cgroups or network refused; see above)"
  fi
  [ -s "$dir.err" ] && sed 's/^/podman-setup: (podman said) /' "$dir.err" >&2
  rm -f "$dir.err"
  [ "${out%%$'\n'*}" = 4096 ] ||
    die 2 "cannot run containers as configured: nofile is '${out%%$'\n'*}' in a container, not 4096 ($CONF)"
  case $out in
    *bridge) ;;
    *) die 2 "cannot give containers a network: no eth0 on the default bridge (netavark, iptables)" ;;
  esac
  echo "podman-setup: podman runs containers ($(podman --version), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'), storage $(podman info --format '{{.Store.GraphDriverName}}'))"
}

pid_alive() { # pid_alive PIDFILE: the pid in it runs `podman system service`
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'podman system service'
}

start_service() {
  local sock=${1:?usage: $0 start SOCK [PIDFILE]} pidfile=${2:-$1.pid}
  command -v podman >/dev/null 2>&1 || die 2 "cannot start the API service: podman is not installed (run setup)"
  if pid_alive "$pidfile"; then
    echo "podman-setup: service already running (pid $(cat "$pidfile")) on unix://$sock"
    return 0
  fi
  mkdir -p "$(dirname "$sock")"
  rm -f "$sock"
  setsid podman system service --time=0 "unix://$sock" </dev/null >"$sock.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if [ -S "$sock" ] && curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
      echo "podman-setup: service on unix://$sock (pid $(cat "$pidfile"), log $sock.log); export DOCKER_HOST=unix://$sock"
      return 0
    fi
    pid_alive "$pidfile" || break
    sleep 0.2
  done
  tail -n 20 "$sock.log" >&2 || true
  stop_service "$sock" "$pidfile" >/dev/null 2>&1 || true
  die 1 "cannot start the API service on unix://$sock (log: $sock.log)"
}

stop_service() {
  local sock=${1:?usage: $0 stop SOCK [PIDFILE]} pidfile=${2:-$1.pid} pid
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    echo "podman-setup: no service running for $pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 50); do
    [ -d "/proc/$pid" ] || break
    sleep 0.2
  done
  [ -d "/proc/$pid" ] && kill -KILL "$pid"
  rm -f "$pidfile" "$sock"
  echo "podman-setup: stopped the service (pid $pid)"
}

case ${1:-setup} in
  setup)
    need_root
    install_packages
    write_conf
    smoke_test
    ;;
  conf) write_conf ;;
  check) smoke_test ;;
  start) shift; start_service "$@" ;;
  stop) shift; stop_service "$@" ;;
  *) die 64 "unknown command '${1}'; use setup, conf, check, start SOCK [PIDFILE] or stop SOCK [PIDFILE]" ;;
esac
