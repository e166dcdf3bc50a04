"""``python -m edge.provision``: fetch the face-detector files, sha256-checked (see edge.app.provision)."""
import sys

from edge.app.provision import main

if __name__ == "__main__":
    sys.exit(main())
