#!/usr/bin/env bash
# Makes sure Debian's chromium and chromium-driver are installed (the dashboard's browser test drives them);
# installs them quietly if not (with fonts, so screenshots show text). Exits 0 when both binaries are present.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
  exit 0
fi
echo "chromium or chromedriver not found: installing Debian's chromium and chromium-driver packages"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null
if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
  echo "could not install chromium and chromium-driver"
  exit 1
fi
