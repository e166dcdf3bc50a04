#!/usr/bin/env bash
# Installs maskgate as a boot-time service on a Jetson Nano with JetPack 4.6 (L4T R32.7:
# Ubuntu 18.04, Python 3.6.9, TensorRT 8.2.1, CUDA 10.2, OpenCV 4.1.1).
#
#   sudo ./scripts/install-jetson.sh            # from a checkout of the repository
#   sudo ./scripts/install-jetson.sh --no-start # install and enable, start at next boot
#   sudo ./scripts/install-jetson.sh --ort-wheel=onnxruntime_gpu-1.10.0-cp36-cp36m-linux_aarch64.whl
#   ./scripts/install-jetson.sh --docker        # inside docker/Dockerfile.jetson (no systemd)
#
# Layout (the same as systemd/maskgate.service and docker/Dockerfile.jetson):
#   /opt/maskgate             edge/, export/, models/ and a venv that sees JetPack's
#                             tensorrt, cv2 and gi (--system-site-packages)
#   /etc/maskgate/config.yaml the appliance's settings (kept when it exists)
#   /var/lib/maskgate         engines and events; /run/maskgate/health.json
# Needs PyPI for pycuda, the detector files (edge.provision) and what JetPack lacks.
set -euo pipefail

PREFIX=/opt/maskgate
CONF_DIR=/etc/maskgate
STATE_DIR=/var/lib/maskgate
SVC_USER=maskgate
UNIT=/etc/systemd/system/maskgate.service
VENV_PY="$PREFIX/.venv/bin/python"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
docker=0
start=1
ort_wheel=""
# numpy's OpenBLAS misdetects the Nano's Cortex-A57 ("Illegal instruction"); the unit sets it too.
export OPENBLAS_CORETYPE=ARMV8

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "install-jetson: $*" >&2
  exit 1
}

step() {
  echo "==> $*"
}

for arg in "$@"; do
  case "$arg" in
    --docker) docker=1 ;;
    --no-start) start=0 ;;
    --ort-wheel=*) ort_wheel=$(realpath "${arg#--ort-wheel=}") ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $arg (see --help)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $*"
[ -f "$repo/edge/__init__.py" ] || die "run from a checkout of the repository ($repo has no edge/)"

check_platform() {
  if [ -r /etc/nv_tegra_release ]; then
    head -n 1 /etc/nv_tegra_release | grep -q "R32" \
      || echo "warning: $(head -n 1 /etc/nv_tegra_release): this script targets L4T R32 (JetPack 4.6)" >&2
  elif [ "$docker" -eq 0 ]; then
    die "/etc/nv_tegra_release not found: this is not a Jetson (on x86 use docker/Dockerfile.cpu)"
  fi
  command -v python3 >/dev/null || die "python3 not found"
}

install_apt() {
  step "system packages"
  # GStreamer and PyGObject from Ubuntu (JetPack adds nvarguscamerasrc, nvvidconv and
  # the hardware codecs); numpy and yaml from apt so that they match JetPack's OpenCV.
  local packages=(
    python3-venv python3-pip python3-dev build-essential
    python3-gi python3-numpy python3-yaml
    gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp
    gstreamer1.0-x
  )
  # TensorRT's Python binding comes with JetPack; in a container the nvidia runtime
  # mounts it from the host instead.
  [ "$docker" -eq 1 ] || packages+=(python3-libnvinfer)
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
}

install_code() {
  step "code and models into $PREFIX"
  mkdir -p "$PREFIX"
  # Replace the code, keep the venv (rebuilding pycuda takes minutes on a Nano).
  rm -rf "$PREFIX/edge" "$PREFIX/export"
  cp -r "$repo/edge" "$repo/export" "$PREFIX/"
  mkdir -p "$PREFIX/models"
  cp -r "$repo/models/." "$PREFIX/models/"
  cp "$repo/README.md" "$repo/pyproject.toml" "$PREFIX/" 2>/dev/null || true
  find "$PREFIX" -name __pycache__ -prune -exec rm -rf {} +
}

install_venv() {
  step "Python environment $PREFIX/.venv"
  [ -x "$VENV_PY" ] || python3 -m venv --system-site-packages "$PREFIX/.venv"
  # Ubuntu 18.04's pip 9 predates manylinux2014 wheels; 21.3.1 is the last for Python 3.6.
  "$VENV_PY" -m pip install -q --upgrade "pip<22" "setuptools<60" wheel
  # The package is not pip-installed: its pyproject needs setuptools>=61, which requires
  # Python 3.7. A .pth file puts $PREFIX on sys.path instead (what an editable install does).
  local site
  site=$("$VENV_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$PREFIX" > "$site/maskgate.pth"
  # The console script of pyproject.toml ("maskgate = edge.__main__:main").
  printf '#!/bin/sh\nexec %s -m edge "$@"\n' "$VENV_PY" > "$PREFIX/.venv/bin/maskgate"
  chmod 0755 "$PREFIX/.venv/bin/maskgate"

  # What pyproject's dependencies and extras name, taken from JetPack where it has them.
  "$VENV_PY" -c 'import numpy, yaml, gi' || die "numpy, yaml or gi missing after apt"
  if ! "$VENV_PY" -c 'import cv2' 2>/dev/null; then
    # l4t-base has no OpenCV: 4.6.0.66 is the last wheel for Python 3.6 (abi3, aarch64).
    "$VENV_PY" -m pip install -q "opencv-python-headless>=4.1,<4.7"
  fi
  if ! "$VENV_PY" -c 'import pycuda' 2>/dev/null; then
    if [ -x /usr/local/cuda/bin/nvcc ]; then
      # The TensorRT backend's buffers; the version jkjung-avt/tensorrt_demos uses on JetPack 4.
      PATH="/usr/local/cuda/bin:$PATH" CUDA_ROOT=/usr/local/cuda \
        "$VENV_PY" -m pip install -q "pycuda==2019.1.2"
    else
      echo "warning: no /usr/local/cuda/bin/nvcc: pycuda not built, TensorRT backend unavailable" \
           "(docker build: set \"default-runtime\": \"nvidia\" in /etc/docker/daemon.json)" >&2
    fi
  fi
  # onnxruntime runs the RetinaFace detector and the --backend ort fallback. PyPI's 1.10 is
  # the last aarch64 wheel for Python 3.6 (CPU only); --ort-wheel takes NVIDIA's
  # onnxruntime-gpu wheel for JetPack 4.6 (Jetson Zoo) instead.
  if [ -n "$ort_wheel" ]; then
    "$VENV_PY" -m pip install -q "$ort_wheel"
  elif ! "$VENV_PY" -c 'import onnxruntime' 2>/dev/null; then
    "$VENV_PY" -m pip install -q "onnxruntime>=1.8,<1.11" \
      || echo "warning: onnxruntime not installed (set detector.name: haar or ssd)" >&2
  fi
}

provision_models() {
  step "face-detector files (edge.provision, sha256-checked)"
  "$VENV_PY" -m edge.provision --dest "$PREFIX/models/detectors"
  ls "$PREFIX"/models/*.onnx >/dev/null 2>&1 \
    || echo "warning: no classifier ONNX in $PREFIX/models (see README: export)" >&2
}

create_user() {
  step "user $SVC_USER"
  if ! id "$SVC_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin "$SVC_USER"
  fi
  # video: /dev/video*, /dev/nvhost-* and /dev/nvmap belong to it on L4T.
  usermod -a -G video "$SVC_USER"
}

install_config() {
  step "configuration $CONF_DIR"
  install -d -m 0750 -g "$SVC_USER" "$CONF_DIR"
  # The documented defaults, for reference; the service reads only config.yaml.
  install -m 0644 "$repo/edge/app/default_config.yaml" "$CONF_DIR/config.default.yaml"
  if [ -e "$CONF_DIR/config.yaml" ]; then
    install -m 0640 -g "$SVC_USER" "$repo/systemd/maskgate.yaml" "$CONF_DIR/config.yaml.new"
    echo "kept $CONF_DIR/config.yaml; the shipped one is $CONF_DIR/config.yaml.new"
  else
    # Group-readable only: it may hold the health endpoint's token.
    install -m 0640 -g "$SVC_USER" "$repo/systemd/maskgate.yaml" "$CONF_DIR/config.yaml"
  fi
}

install_unit() {
  step "systemd unit"
  install -m 0644 "$repo/systemd/maskgate.service" "$UNIT"
  install -m 0644 "$repo/systemd/maskgate.logrotate" /etc/logrotate.d/maskgate
  systemctl daemon-reload
  systemctl enable maskgate.service
  if [ "$start" -eq 1 ]; then
    # --no-block: Type=notify waits for READY, minutes on the first boot.
    systemctl restart --no-block maskgate.service
    echo "starting maskgate (the first start builds the TensorRT engine: several minutes)"
    echo "  follow it:    journalctl -u maskgate -f"
  fi
}

advise_power() {
  echo
  echo "Power: the Nano keeps up with the camera in its 10 W mode with fixed clocks:"
  if command -v nvpmodel >/dev/null; then
    echo "  now: $(nvpmodel -q 2>/dev/null | head -n 1)"
  fi
  echo "  sudo nvpmodel -m 0     # MAXN, 10 W (needs a 5 V 4 A barrel-jack supply; J48 jumper)"
  echo "  sudo jetson_clocks     # pin CPU/GPU/EMC clocks to max (until reboot)"
  echo "Health:  $VENV_PY -m edge.health /run/maskgate/health.json"
  echo "Status:  systemctl status maskgate; journalctl -u maskgate"
}

check_platform
install_apt
install_code
install_venv
provision_models
if [ "$docker" -eq 1 ]; then
  exit 0
fi
create_user
install_config
install_unit
advise_power
