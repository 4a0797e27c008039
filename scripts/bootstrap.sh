#!/usr/bin/env bash
# Creates ./.venv with oblivio and its pinned dependencies (constraints.txt).
# On a fresh Debian machine, installs the system packages it needs through apt-get when run as root.
# Usage: `bash scripts/bootstrap.sh [EXTRAS]`: EXTRAS is "dev" for the test tools, "dev,bench" adds
# the peers the benchmarks measure against.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
extra=${1:-}

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "oblivio setup: missing system packages: $* (run as root, or install them with apt-get)" >&2
        return 1
    fi
    if [ -z "${OBLIVIO_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        export OBLIVIO_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

python=${OBLIVIO_PYTHON:-}
if [ -z "$python" ]; then
    if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
fi
if ! command -v "$python" >/dev/null 2>&1; then
    apt_install python3 python3-venv
    python=python3
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv
fi
if [[ ",$extra," == *",dev,"* ]] && ! command -v softhsm2-util >/dev/null 2>&1; then
    # SoftHSM2 is the PKCS#11 token the HSM backend tests run against.
    apt_install softhsm2 || echo "oblivio setup: SoftHSM2 not installed; its tests will skip" >&2
fi

if [ "$(id -u)" = 0 ]; then
    # Pango and a font: PDF reports (WeasyPrint). Without them only PDF reports fail, saying so.
    bash scripts/ensure-pango.sh || echo "oblivio setup: pango not installed; PDF reports will not render" >&2
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=".venv/.oblivio-installed-$extra-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
    spec="."
    [ -n "$extra" ] && spec=".[$extra]"
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e "$spec" >&2
    rm -f ".venv/.oblivio-installed-$extra-"*
    touch "$stamp"
fi
