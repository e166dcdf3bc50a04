"""bench/scene_video.py: a clip made from scenes is the shared truth clip's kind, made again
from the same scenes it matches that clip, truth and pictures."""
import json
import os
import sys

import cv2
import numpy as np

from conftest import ROOT, data_path
from edge.measure.truth import read_video_truth, read_voc

sys.path.insert(0, os.path.join(ROOT, "bench"))
import scene_video  # noqa: E402


def frames_of(path, indices):
    """The decoded frames of a clip at ``indices`` (BGR)."""
    capture, found = cv2.VideoCapture(path), {}
    for index in range(max(indices) + 1):
        ok, frame = capture.read()
        assert ok, "%s ended before frame %d" % (path, index)
        if index in indices:
            found[index] = frame
    return found


def test_the_shared_clips_first_scenes_made_again_match_it(tmp_path):
    shared_truth = data_path("videos", "kaggle853_test_scenes.json")
    shared = json.load(open(shared_truth))
    names = [entry["scene"] for entry in shared["frames"][:30:10]]  # its first three scenes
    by_name = dict((os.path.splitext(s.key)[0], s) for s in read_voc(data_path("kaggle853"), "test"))
    out = str(tmp_path / "clip.mp4")
    truth = scene_video.write_clip([by_name[name] for name in names], out)

    made = json.load(open(truth))
    assert made["size"] == shared["size"] and made["fps"] == shared["fps"] and len(made["frames"]) == 30
    for mine, theirs in zip(made["frames"], shared["frames"][:30]):
        assert mine["scene"] == theirs["scene"]
        assert [o["label"] for o in mine["objects"]] == [o["label"] for o in theirs["objects"]]
        assert np.allclose([o["box"] for o in mine["objects"]], [o["box"] for o in theirs["objects"]], atol=0.11)
    video, frames, size = read_video_truth(truth)  # what edge.evaluate reads
    assert video == out and size == (1280, 720) and len(frames) == 30

    indices = (0, 15, 29)
    mine = frames_of(out, indices)
    theirs = frames_of(data_path("videos", "kaggle853_test_scenes.mp4"), indices)
    for index in indices:
        assert cv2.PSNR(mine[index], theirs[index]) > 30  # the same picture, two encodings (34-44 dB)
    assert cv2.PSNR(mine[0], theirs[15]) < 15  # another scene is not (7 dB)


def test_a_scene_is_letterboxed_into_the_frame_with_its_boxes():
    image = np.full((300, 400, 3), 200, np.uint8)
    frame, scale, (dx, dy) = scene_video.letterboxed(image, 1280, 720)
    assert frame.shape == (720, 1280, 3) and scale == 2.4 and (dx, dy) == (160, 0)
    assert frame[:, :160].max() == 0 and frame[:, 1120:].max() == 0 and frame[:, 160:1120].min() == 200
