#!/usr/bin/env bash
# Headless Chromium for the HTML-report screenshot test: installed from Debian's packages when missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo ">> installing chromium (Debian package, about 1 minute)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "!! chromium is not installed and cannot be installed here (needs root and apt-get);" \
       "the report screenshot test will fail until it is" >&2
fi
