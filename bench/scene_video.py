"""A camera-like clip with per-frame truth from a VOC scene set's split, for ``edge.evaluate``.

``../shared/data/videos/kaggle853_test_scenes.mp4`` is kaggle853 *test* scenes letterboxed
into 1280x720 frames, each held 1 s at 10 fps: a camera's view of a street, through the
service's tracked pipeline. Choosing anything for cameras on it would be choosing on test.
This script makes the same kind of clip from any split of a scene set (``val`` to choose on),
at any frame size, in the same format (H.264 mp4 + JSON of boxes per frame):

    .venv/bin/python bench/scene_video.py ../shared/data/kaggle853 --split val --out /tmp/k853_val.mp4
    .venv/bin/python -m edge.evaluate /tmp/k853_val.mp4

Scenes in name order (``--limit N``: the first N), each scaled to fit the frame (up or down,
aspect kept), centred on black, held ``--hold`` frames; its boxes scaled and moved with it.
The clip is written where ``--out`` says, never into the repository (the data's licences
stay with the data).
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from edge.io.sinks import open_sink  # noqa: E402
from edge.measure.truth import read_voc  # noqa: E402

# The shared clip's picture quality (its frames' mean PSNR against the scenes: 39.9 dB; x264 at this
# rate: 40.2 dB): a camera stream's compression, which small faces feel.
BITRATE = 2000
# Label names as the shared video's JSON writes them (edge.measure.truth maps them back).
VOC_NAMES = {"mask": "with_mask", "no_mask": "without_mask", "incorrect": "mask_weared_incorrect"}


def letterboxed(image, width, height):
    """(frame, scale, (dx, dy)): ``image`` scaled to fit width x height, centred on black."""
    h, w = image.shape[:2]
    scale = min(float(width) / w, float(height) / h)
    new_w, new_h = int(round(w * scale)), int(round(h * scale))
    frame = np.zeros((height, width, 3), np.uint8)
    dx, dy = (width - new_w) // 2, (height - new_h) // 2
    frame[dy:dy + new_h, dx:dx + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return frame, scale, (dx, dy)


def write_clip(scenes, out, width=1280, height=720, fps=10, hold=10, bitrate=BITRATE):
    """Write ``out`` (mp4, H.264 at ``bitrate`` kbit/s) and its truth JSON (same name, .json);
    returns the JSON's path."""
    sink = open_sink(out, fps=fps, bitrate=bitrate)
    frames, index = [], 0
    for scene in tqdm(scenes, desc="scenes", disable=None):
        image = cv2.imread(scene.path)
        if image is None:
            raise SystemExit("cannot read %s" % scene.path)
        frame, scale, (dx, dy) = letterboxed(image, width, height)
        boxes = scene.boxes * scale + np.array([dx, dy, dx, dy], np.float32)
        objects = [{"label": VOC_NAMES[label], "box": [round(float(v), 1) for v in box]}
                   for label, box in zip(scene.labels, boxes)]
        for _ in range(hold):
            sink.write(frame)
            frames.append({"frame": index, "scene": os.path.splitext(scene.key)[0], "objects": objects})
            index += 1
    sink.close()
    if sink.failed:
        raise SystemExit("writing %s failed: %s" % (out, sink.failed))
    truth = os.path.splitext(out)[0] + ".json"
    with open(truth, "w") as handle:
        json.dump({"video": os.path.basename(out), "fps": fps, "size": [width, height],
                   "box_format": "xyxy pixels", "frames": frames}, handle)
    return truth


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenes", help="a VOC scene set (images/, annotations/, splits.csv)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", required=True, help="the clip to write (.mp4); its truth goes beside it (.json)")
    parser.add_argument("--size", default="1280x720", help="frame WxH (default 1280x720, as the shared clip)")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--hold", type=int, default=10, help="frames each scene is held (default 10: 1 s)")
    parser.add_argument("--bitrate", type=int, default=BITRATE, help="H.264 kbit/s (default %(default)s, as the shared clip)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N scenes")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    scenes = read_voc(args.scenes, args.split)[:args.limit]
    truth = write_clip(scenes, args.out, width, height, args.fps, args.hold, args.bitrate)
    print("%s: %d scenes, %d frames of %dx%d; truth %s" % (
        args.out, len(scenes), len(scenes) * args.hold, width, height, truth))


if __name__ == "__main__":
    main()
