#!/usr/bin/env bash
# The device tests against the oldest libraries pip can install on this machine's Python,
# the nearest this machine gets to JetPack 4.6's (which cannot be installed here):
#
#   ./scripts/floor-test.sh          # or: make floor-test (venv in .cache/floor-venv)
#
#   library     JetPack 4.6   here                 why not older
#   numpy       1.13.3        1.23.2               the oldest wheel for this Python (3.11)
#   OpenCV      4.1.1         4.5.5.62 (headless)  the oldest 4.x wheel for this Python
#   PyYAML      3.12          3.12                 its own pure-Python code from the sdist, with
#                                                  a collections.Hashable alias (Python 3.10+)
#   onnxruntime 1.10 (pip)    1.15.0               the oldest wheel for this Python (installed
#                                                  without its numpy>=1.24.2 pin)
#   GStreamer   1.14.5        the system's         no older one for Debian 12
#   Python      3.6.9         3.11                 vermin checks 3.6 (make lint)
# What these cannot reach, tests/test_device_floor.py checks in the code (the newer APIs
# that the floor lacks), and `make nano-check` on the Nano itself.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.cache/floor-venv"
site="$repo/.cache/floor-site"
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --only-binary=:all: "numpy==1.23.2" "opencv-python-headless==4.5.5.62" \
    pytest coloredlogs flatbuffers packaging protobuf sympy
  "$venv/bin/pip" install -q --only-binary=:all: --no-deps "onnxruntime==1.15.0"
  mkdir -p "$site"
  tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --no-deps --no-binary=:all: "pyyaml==3.12" -d "$tmp"
  "$venv/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$tmp/PyYAML-3.12.zip" "$tmp"
  rm -rf "$site/yaml"
  cp -r "$tmp/PyYAML-3.12/lib3/yaml" "$site/yaml"
  rm -rf "$tmp"
  cat > "$site/sitecustomize.py" <<'PY'
# The floor venv only: PyYAML 3.12's code uses collections.Hashable (collections.abc since
# Python 3.10). The alias lets it run here; its API (no sort_keys, no FullLoader) is its own.
import collections
import collections.abc
if not hasattr(collections, "Hashable"):
    collections.Hashable = collections.abc.Hashable
PY
  # PyGObject (GStreamer) as the development venv built it: none older builds here.
  # GI_PYTHON: a Python of the same version that has gi (default: the development venv's).
  gi=$("${GI_PYTHON:-$repo/.venv/bin/python}" -c 'import gi, os; print(os.path.dirname(gi.__path__[0]))')
  for package in gi cairo; do
    ln -sfn "$gi/$package" "$site/$package"
  done
  echo "$site" > "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/floor-site.pth"
fi
"$venv/bin/python" -c 'import numpy, cv2, yaml, onnxruntime
print("floor: numpy %s, OpenCV %s, PyYAML %s, onnxruntime %s" % (numpy.__version__, cv2.__version__,
      yaml.__version__, onnxruntime.__version__))'
cd "$repo"
# The device's tests: no torch, no onnx, no training stack in this venv (those tests skip).
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs --ignore tests/infer/test_contract.py \
  tests/infer tests/io tests/measure tests/app tests/test_layout.py tests/test_device_floor.py "$@"
