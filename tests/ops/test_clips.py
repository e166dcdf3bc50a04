"""Clips around non-compliant people: what they hold, the folder's limits, and the service's use."""
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT, data_path, require_detectors
from edge.io.sources import open_source
from edge.ops.clips import NAME, ClipRecorder
from edge.ops.people import Person


def frame(index, width=320, height=180):
    """A frame showing its index in binary: 8 vertical bars, white for 1 (readable after H.264)."""
    image = np.zeros((height, width, 3), np.uint8)
    bar = width // 8
    for bit in range(8):
        if index >> (7 - bit) & 1:
            image[:, bit * bar:(bit + 1) * bar] = 255
    return image


def read_index(image):
    bar = image.shape[1] // 8
    bits = [image[:, b * bar + bar // 4:(b + 1) * bar - bar // 4].mean() > 128 for b in range(8)]
    return sum(1 << (7 - b) for b, on in enumerate(bits) if on)


def decode(path):
    """(shape, index) of each frame of a video file."""
    source = open_source(path)
    frames = []
    try:
        while source.is_streaming:
            got = source.read(timeout=5.0)
            if got is not None:
                frames.append((got.image.shape, read_index(got.image)))
    finally:
        source.close()
    return frames


class Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def feed(recorder, clock, indices, step=0.125):
    """Frames at 8 fps of a fake clock (binary fractions: no rounding in the comparisons)."""
    for i in indices:
        recorder.write(frame(i))
        clock.now += step


def person(track, label="no_mask"):
    return Person(track, label, 0.9, 0.0, 1.0)


def test_a_clip_holds_the_seconds_before_and_after_the_person(tmp_path):
    clock = Clock()
    rec = ClipRecorder(str(tmp_path), before=1.0, after=1.0, fps=8, width=160, clock=clock)
    feed(rec, clock, range(0, 40))          # 5 s; the last second is kept in memory
    rec.trigger(person(7), now=1.8e9)
    feed(rec, clock, range(40, 48))         # 1 s after, less one frame ...
    rec.trigger(person(8), now=1.8e9 + 1)   # ... when another one comes: the clip goes on
    feed(rec, clock, range(48, 61))
    assert rec.stats()["recording"] is False
    rec.close()
    names = os.listdir(str(tmp_path))
    assert names == ["clip_20270115T080000Z_track7_no_mask.mp4"] and NAME.match(names[0])
    levels = decode(os.path.join(str(tmp_path), names[0]))
    assert all(shape == (90, 160, 3) for shape, _ in levels)     # scaled to the clip width
    # From 1 s before the first person (frame 31) to 1 s after the second (frame 56).
    assert [index for _, index in levels] == list(range(31, 57))
    assert rec.recorded == 1 and rec.skipped == 0


def test_the_folder_keeps_at_most_max_count_clips_oldest_deleted(tmp_path):
    clock = Clock()
    rec = ClipRecorder(str(tmp_path), before=0.2, after=0.2, fps=8, width=160, max_count=2, clock=clock)
    (tmp_path / "notes.txt").write_text("not a clip: never deleted")
    for k in range(4):
        rec.trigger(person(k + 1), now=1.8e9 + k)
        feed(rec, clock, range(10))
        rec._shutdown()                      # wait for this clip's writer
    clips = sorted(n for n in os.listdir(str(tmp_path)) if n.endswith(".mp4"))
    assert clips == ["clip_20270115T080002Z_track3_no_mask.mp4", "clip_20270115T080003Z_track4_no_mask.mp4"]
    assert rec.recorded == 4 and rec.deleted == 2 and (tmp_path / "notes.txt").exists()
    small = ClipRecorder(str(tmp_path), max_mb=1e-6, clock=clock)   # the size limit
    small._enforce_limits(keep=os.path.join(str(tmp_path), clips[-1]))
    assert sorted(os.listdir(str(tmp_path))) == [clips[-1], "notes.txt"]


def test_the_service_records_clips_of_non_compliant_people(tmp_path):
    video = data_path("videos", "kaggle853_test_scenes.mp4")
    require_detectors()
    folder = str(tmp_path / "clips")
    proc = subprocess.run([sys.executable, "-m", "edge", video, "none", "--headless", "--backend", "ort",
                           "--max-frames", "120", "--clips", folder, "--clip-max-count", "2",
                           "--clip-before", "0.5", "--clip-after", "0.5", "--blur-faces"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    log = proc.stdout.decode()
    assert proc.returncode == 0, log
    clips = sorted(os.listdir(folder))
    assert 1 <= len(clips) <= 2 and all(NAME.match(n) and "_no_mask" in n for n in clips), clips
    for name in clips:
        levels = decode(os.path.join(folder, name))
        assert len(levels) >= 3 and levels[0][0] == (360, 640, 3)
