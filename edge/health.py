"""``python -m edge.health PATH_OR_URL``: the operator's health check (see edge.app.health)."""
import sys

from edge.app.health import main

if __name__ == "__main__":
    sys.exit(main())
