#!/usr/bin/env bash
# Install what natsim needs, once: Debian packages only when missing, then a virtual
# environment in the repository with natsim and its development tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# a C compiler and the Python headers: the dataplane's fast path (simulator/dataplane/_fastpath.c) is
# compiled when natsim is installed
cc=$("$PY" -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])' 2>/dev/null || echo cc)
command -v "$cc" >/dev/null 2>&1 || need_apt+=(gcc)
"$PY" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  >/dev/null 2>&1 || need_apt+=(python3-dev)
# libfaketime: programs natsim starts in a world run on its compressed clock
# (simulator/world/modeltime.py); the timer shim beside it is built with the package
{ ls /usr/lib/*/faketime/libfaketimeMT.so.1 || ls /usr/lib/faketime/libfaketimeMT.so.1; } \
  >/dev/null 2>&1 || need_apt+=(libfaketime)
# haproxy: the L4-proxy contrast (l4-proxy-keepalive, the demo's third story); optional
# for an ordinary user, who is told how to add it
if ! command -v haproxy >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then need_apt+=(haproxy); else
    echo "natsim setup: l4-proxy-keepalive and natsim demo need HAProxy: sudo apt-get install haproxy"
  fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "natsim setup: missing Debian packages: ${need_apt[*]}; run as root or: sudo apt-get install ${need_apt[*]}" >&2
    exit 3
  fi
  echo "natsim setup: installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # the package may start its own service on the host; natsim starts HAProxy in a run's
  # namespace only
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now haproxy 2>/dev/null || true; fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "natsim setup: creating .venv"
  "$PY" -m venv .venv
fi
echo "natsim setup: installing natsim and its tools into .venv"
# pip's and the build backend's chatter goes to a log; shown only if the install fails
if ! { .venv/bin/python -m pip install -q --upgrade pip 'setuptools>=77' &&
       .venv/bin/python -m pip install -q -e '.[dev]'; } > .venv/setup.log 2>&1; then
  tail -n 40 .venv/setup.log >&2
  echo "natsim setup: pip failed; the whole log is .venv/setup.log" >&2
  exit 1
fi
.venv/bin/python -c 'import simulator, pyroute2, scapy, yaml'
# `natsim` on PATH, as the README shows it: as root, a link in /usr/local/bin to this
# checkout, made only where there is none (or only a dangling one) or it is already this
# checkout's: on a shared machine another clone's link is someone else's `natsim`, and a
# program of that name that is not a link is left alone too; otherwise say how
link=/usr/local/bin/natsim
ours="$PWD/.venv/bin/natsim"
if [ "$(id -u)" -eq 0 ] && [ -d /usr/local/bin ]; then
  if [ ! -e "$link" ] || [ "$(readlink "$link")" = "$ours" ]; then
    ln -sfn "$ours" "$link"  # none, dangling, or ours already
    echo "natsim setup: $link -> $ours"
  elif [ -L "$link" ]; then
    echo "natsim setup: $link is another checkout's ($(readlink "$link")), left as it is;" \
         "this natsim is $ours (add $PWD/.venv/bin to PATH, or remove the link and run" \
         "make setup again)"
  else
    echo "natsim setup: $link is another program; this natsim is $ours"
  fi
else
  echo "natsim setup: to type \`natsim\`, add $PWD/.venv/bin to PATH (or: . .venv/bin/activate)"
fi
touch .venv/.installed
