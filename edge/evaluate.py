"""``python -m edge.evaluate SCENES``: end-to-end accuracy of the service (see edge.measure.evaluate)."""
import sys

from edge.measure.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
