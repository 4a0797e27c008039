#!/usr/bin/env bash
# Makes the system libraries WeasyPrint renders PDF reports with available (oblivio report,
# GET /v1/requests/{id}/report?format=pdf): pango (with its FreeType backend, harfbuzz and
# fontconfig) and a font. Installs them with apt-get as root on a machine that lacks them.
set -euo pipefail
libraries=$(ldconfig -p)
have() { grep -q "$1" <<<"$libraries"; }
if have libpango-1.0.so.0 && have libpangoft2-1.0.so.0 && have libharfbuzz.so.0 \
    && [ -n "$(fc-list 2>/dev/null | head -1)" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-pango: pango or a font is missing and this user cannot install them:" \
        "apt-get install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core" >&2
    exit 1
fi
if [ -z "${OBLIVIO_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fontconfig fonts-dejavu-core >/dev/null
