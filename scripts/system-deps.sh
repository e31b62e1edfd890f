#!/usr/bin/env bash
# System packages the tests use that pip cannot provide: ffmpeg (benchmark baseline) and Chromium (browser tests).
# Installed only when missing and when we can (root with apt-get); otherwise the dependent tests skip with a reason.
set -euo pipefail
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
else
  echo "note: ${need[*]} missing and apt-get unavailable as this user; tests that need them will skip" >&2
fi
