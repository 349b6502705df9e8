#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed: the console's browser tests (tests/test_console.py)
# drive it headless through Playwright with executable_path=/usr/bin/chromium (Playwright's own
# browser downloads are never used). Installs it when missing and it can (root and apt-get);
# otherwise fails with one line saying what to do.
set -euo pipefail

have() { test -x /usr/bin/chromium; }
have && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/chromium.sh: the console's browser tests need Debian's Chromium at /usr/bin/chromium; install it (Debian: sudo apt-get install chromium)" >&2
    exit 1
fi
echo "installing chromium for the console's browser tests (once)" >&2
if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "scripts/chromium.sh: apt-get could not install chromium; install it by hand (apt-get install chromium)" >&2
    exit 1
fi
have || { echo "scripts/chromium.sh: chromium is installed but /usr/bin/chromium was not found" >&2; exit 1; }
