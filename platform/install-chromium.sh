#!/bin/sh
# Installs Debian's Chromium for the browser tests (tests/dashboard/test_browser.py drives it with Playwright).
# Playwright's own browser download needs the internet; Debian's package comes from the archive.
set -eu
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "install-chromium: /usr/bin/chromium is missing; as root run: apt-get install -y chromium" >&2
  exit 1
fi
echo "install-chromium: installing Debian's chromium package for the browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends chromium || {
  $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends chromium
}
test -x /usr/bin/chromium
