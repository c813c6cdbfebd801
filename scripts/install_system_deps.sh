#!/usr/bin/env bash
# Install the Debian packages the test suite needs (Xvfb + Qt/OpenGL libraries for napari,
# poppler-utils for reading PDF reports back, chromium for the HTML report screenshot).
# Does nothing when everything is already present. Needs root (or sudo).
set -euo pipefail
pkgs=(xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
      libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libegl1
      libdbus-1-3 libgl1 libfontconfig1 libpango-1.0-0 libpangoft2-1.0-0 poppler-utils chromium
      chromium-driver fonts-dejavu-core)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "system packages: all present"; exit 0; }
echo "system packages: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
