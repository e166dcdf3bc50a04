#!/usr/bin/env bash
# One check a Jetson Nano owner runs once, and one report to send back:
#
#   ./scripts/nano-check.sh                  # or: make nano-check
#   ./scripts/nano-check.sh --video clip.mp4 # edge-bench on this video
#   ./scripts/nano-check.sh --steps platform,libraries,elements   # some steps only
#
# It checks the JetPack and library versions, the Jetson GStreamer elements (a short
# videotestsrc -> nvvidconv -> nvv4l2h264enc pipeline), the camera (CSI or USB, when one is
# there and the service does not hold it), builds and checks the TensorRT engine, runs the
# tests that need TensorRT, pycuda and the Jetson elements, and edge-bench. Report:
# out/nano-check/nano-check.json and nano-check.md. Minutes (the engine build); run it as
# the user who installed maskgate, from the repository checkout. Details: scripts/nanocheck.py.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The service's Python (JetPack's tensorrt, cv2 and gi through --system-site-packages), else
# the development venv, else the system's.
python=python3
for candidate in /opt/maskgate/.venv/bin/python "$repo/.venv/bin/python"; do
  if [ -x "$candidate" ]; then
    python=$candidate
    break
  fi
done
# numpy's OpenBLAS misdetects the Nano's Cortex-A57 ("Illegal instruction"); the unit sets it too.
if [ "$(uname -m)" = "aarch64" ]; then
  export OPENBLAS_CORETYPE=ARMV8
fi
cd "$repo"
exec "$python" "$repo/scripts/nanocheck.py" "$@"
