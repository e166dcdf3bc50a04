"""What drawing the overlay costs per frame, by crowd size, on real kaggle853 scenes.

    .venv/bin/python bench/overlay_cost.py [--data ../shared/data/kaggle853] [--scenes NAME,NAME]

Each scene's annotated faces (true boxes and labels, as the classifier would give them,
with track ids as in the video) are drawn as the service draws a frame: boxes, the HUD
and every label placed off the others (``edge.app.overlay.draw``), and, beside it, the
boxes and the HUD alone, so that the labels' share is visible. Reported: the best of 5
repeats of 20 draws, in ms per frame (the copy of the frame included, as in the loop).
"""
import argparse
import os
import sys
import timeit
import xml.etree.ElementTree as ET

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edge.app import overlay  # noqa: E402
from edge.infer.faces import Face, count_labels  # noqa: E402

LABELS = {"with_mask": "mask", "without_mask": "no_mask", "mask_weared_incorrect": "incorrect"}


def scene(folder, name):
    """A kaggle853 image and its annotated faces as tracked, classified ``Face`` objects."""
    image = cv2.imread(os.path.join(folder, "images", name + ".jpg"))
    if image is None:
        raise SystemExit("cannot read %s in %s" % (name, folder))
    faces = []
    for i, obj in enumerate(ET.parse(os.path.join(folder, "annotations", name + ".xml")).iter("object")):
        box = [float(obj.find("bndbox/" + k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        faces.append(Face(np.array(box, np.float32), 0.9, None, LABELS[obj.find("name").text], 0.97, i + 1))
    return image, faces


def boxes_and_hud(image, faces, counts):
    for face in faces:
        overlay.draw_box(image, face.box, face.label)
    overlay.draw_hud(image, 30.0, counts)


def best_ms(draw):
    return 1000.0 * min(timeit.repeat(draw, number=20, repeat=5)) / 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "kaggle853"))
    parser.add_argument("--scenes", default="maksssksksss0,maksssksksss388,maksssksksss518",
                        help="kaggle853 image names (without .jpg), comma-separated")
    args = parser.parse_args(argv)
    folder = args.data
    if not os.path.isdir(os.path.join(folder, "annotations")):
        raise SystemExit("no kaggle853 scenes (images/, annotations/) at %s: pass --data" % folder)
    print("| scene | faces | overlay (ms / frame) | boxes + HUD alone | labels' share |")
    print("|---|---|---|---|---|")
    for name in args.scenes.split(","):
        image, faces = scene(folder, name)
        counts = count_labels(faces)
        full = best_ms(lambda: overlay.draw(image.copy(), faces, 30.0, counts))
        plain = best_ms(lambda: boxes_and_hud(image.copy(), faces, counts))
        print("| %s | %d | %.2f | %.2f | %.2f |" % (name, len(faces), full, plain, full - plain))


if __name__ == "__main__":
    main()
