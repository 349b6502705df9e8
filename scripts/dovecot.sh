#!/usr/bin/env bash
# Makes sure Dovecot (Debian's dovecot-imapd) and openssl are installed: the IMAP intake tests
# run a throwaway Dovecot of their own on free ports (tests/imap_support.py). Installs them
# when missing and it can (root and apt-get); otherwise fails with one line saying what to do.
set -euo pipefail

have() { { command -v dovecot || test -x /usr/sbin/dovecot; } >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; }
have && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/dovecot.sh: the IMAP tests need Dovecot and openssl; install them (Debian: sudo apt-get install dovecot-imapd openssl)" >&2
    exit 1
fi
echo "installing dovecot-imapd for the IMAP intake tests (once)" >&2
if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd openssl >/dev/null; }; then
    echo "scripts/dovecot.sh: apt-get could not install dovecot-imapd; install it by hand (apt-get install dovecot-imapd openssl)" >&2
    exit 1
fi
have || { echo "scripts/dovecot.sh: dovecot-imapd is installed but no dovecot binary was found" >&2; exit 1; }
