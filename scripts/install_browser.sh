#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser tests (tests/test_serve_browser.py)
# when /usr/bin/chromium is missing. Idempotent: does nothing when it is already there.
# Needs root (or sudo) and apt; Playwright drives this browser, so `playwright install` is
# never needed.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no apt-get; install Chromium yourself (browser tests skip)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing Debian's chromium for the browser tests..." >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version >&2
