#!/usr/bin/env bash
# Installs the system packages the project needs off the Jetson: GStreamer (with the
# plugins the sources and sinks use), its introspection data, and what PyGObject builds
# against. On JetPack these come with the image. Skips what is already installed.
#   --test   also what only the tests use (make test): a Mosquitto broker and its clients,
#            Chromium with ChromeDriver for the page, openssl for the TLS test's certificates.
set -euo pipefail
packages=(
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-rtsp gstreamer1.0-x xvfb shellcheck libgirepository1.0-dev libcairo2-dev pkg-config
)
for arg in "$@"; do
  case "$arg" in
    --test) packages+=(mosquitto mosquitto-clients chromium chromium-driver openssl) ;;
    *) echo "unknown option $arg (accepted: --test)" >&2; exit 1 ;;
  esac
done
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them with your package manager)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
