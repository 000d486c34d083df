#!/usr/bin/env bash
# Runs INSIDE the test VM (started by scripts/test-vm): sets up the kernel CAN
# stack and vcan0/vcan1, then runs the pytest tests marked `vcan`.
#
#   CANX_PYTHON=/abs/path/to/python bash tests/vm/inside.sh [PYTEST ARGS...]
#
# Also usable as root on a machine with CAN modules (a laptop, a VM).
set -uo pipefail

log() { echo "inside-vm: $*"; }

PY=${CANX_PYTHON:-}
if [ -z "$PY" ] || [ ! -x "$PY" ]; then
    log "ERROR: CANX_PYTHON must be the absolute path of an interpreter (got '${PY}')"
    exit 2
fi

# The guest may start without HOME; pytest, pip and friends want one.
export HOME=${HOME:-/root}
[ -d "$HOME" ] && [ -w "$HOME" ] || export HOME=/tmp
export CANX_VM=1
export PYTHONUNBUFFERED=1
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$REPO"

# ------------------------------------------------------------------ modules
for m in can can-raw vcan; do
    if ! modprobe "$m"; then
        log "ERROR: required module $m cannot be loaded (kernel $(uname -r))"
        exit 2
    fi
done
for m in can-bcm can-gw can-j1939 can-isotp slcan; do
    modprobe "$m" || log "WARNING: optional module $m not loaded; tests that need it will fail or skip"
done

# ------------------------------------------------------------------ interfaces
for ifc in vcan0 vcan1; do
    ip link show "$ifc" >/dev/null 2>&1 || ip link add dev "$ifc" type vcan || {
        log "ERROR: cannot create $ifc"; exit 2; }
    ip link set dev "$ifc" mtu 72 || { log "ERROR: cannot set CAN FD mtu on $ifc"; exit 2; }
    ip link set dev "$ifc" up     || { log "ERROR: cannot bring $ifc up"; exit 2; }
done

log "kernel $(uname -r), guest up $(cut -d' ' -f1 /proc/uptime 2>/dev/null) s"
log "can-utils $(dpkg-query -W -f='${Version}' can-utils 2>/dev/null || echo '(version unknown)') at $(command -v candump || echo 'NOT FOUND')"
log "modules: $(lsmod 2>/dev/null | awk '$1 ~ /^(can|vcan)/ {printf "%s ", $1}')"
ip -brief link show type vcan 2>/dev/null | sed 's/^/inside-vm: /'
log "python $PY"
# A hung test should name itself instead of running into test-vm's overall
# limit.  pytest-timeout (when installed) reads this; costs nothing otherwise.
# (No extra "$PY -c" probes here: each Python start costs 10-30 s under TCG.)
export PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-600}
if [ -n "${CANX_VM_EXEC:-}" ]; then
    log "running: $CANX_VM_EXEC"
    export CANX_PYTHON="$PY"
    bash -c "$CANX_VM_EXEC"
    rc=$?
    log "exit code $rc"
    exit "$rc"
fi
log "running: pytest -m vcan -p no:cacheprovider $*"
"$PY" -m pytest -m vcan -p no:cacheprovider --timeout "$PYTEST_TIMEOUT" "$@"
rc=$?
log "pytest exit code $rc"
exit "$rc"
