"""``python -m edge INPUT [OUTPUT ...]``: the face-mask compliance service (see edge.app.service)."""
import sys

from edge.app.service import main

if __name__ == "__main__":
    sys.exit(main())
