#!/usr/bin/env bash
# Installs what tests/test_browser.py needs on a fresh Debian (or Ubuntu) machine: Debian's Chromium,
# driven by Playwright through executable_path (Playwright cannot download its own browsers offline),
# and fonts so that screenshots show text, not boxes. Idempotent; needs root (or sudo) and apt.
set -euo pipefail

if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "dejavu"; then
    echo "install-browser: chromium and fonts already present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-liberation fontconfig >/dev/null
/usr/bin/chromium --version
