"""Overlay drawing and the events format, on a real kaggle853 scene."""
import datetime
import io
import json
import os
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from conftest import data_path
from edge.app import overlay
from edge.app.events import EventWriter, FaceSaver
from edge.infer.faces import Face, compliance, count_labels

LABELS = {"with_mask": "mask", "without_mask": "no_mask", "mask_weared_incorrect": "incorrect"}


def real_scene(name="maksssksksss0"):
    """A kaggle853 image and its annotated faces as ``Face`` objects with the true labels."""
    folder = data_path("kaggle853")
    image = cv2.imread(os.path.join(folder, "images", name + ".jpg"))
    faces = []
    for i, obj in enumerate(ET.parse(os.path.join(folder, "annotations", name + ".xml")).iter("object")):
        box = [float(obj.find("bndbox/" + k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        faces.append(Face(np.array(box, np.float32), 0.9, None, LABELS[obj.find("name").text], 0.87, i + 1))
    return image, faces


def test_boxes_are_coloured_by_class_and_the_hud_is_drawn():
    image, faces = real_scene()
    original = image.copy()
    counts = count_labels(faces)
    drawn = overlay.draw(image, faces, fps=24.5, counts=counts)
    for face in faces:
        x1, y1, x2, y2 = [int(round(v)) for v in face.box]
        # The bottom edge of each box (the label sits above) is the class colour.
        assert tuple(drawn[y2, (x1 + x2) // 2]) == overlay.COLOURS[face.label]
    # The HUD band darkens the top-left corner.
    assert drawn[2:10, 2:100].mean() < original[2:10, 2:100].mean()
    assert counts["mask"] + counts["no_mask"] + counts["incorrect"] == len(faces)
    assert compliance(counts) == pytest.approx(counts["mask"] / float(len(faces)))
    assert compliance(count_labels([])) is None
    # A mask worn wrong counts against compliance like no mask at all.
    assert compliance({"mask": 3, "no_mask": 0, "incorrect": 1}) == 0.75


def _overlapping_pairs(rects):
    return sum(overlay._overlaps(np.array([a], np.float32), np.array([b], np.float32))[0, 0] > 0
               for i, a in enumerate(rects) for b in rects[i + 1:])


def _labels_above(faces):
    """The label rectangles as they used to be: full text, above every box."""
    rects = []
    for face in faces:
        x1, y1 = int(face.box[0]), int(face.box[1])
        (tw, th), base = cv2.getTextSize(overlay.label_text(face.label, face.score, face.track),
                                         overlay.FONT, 0.4, 1)
        rects.append((x1, y1 - th - base - 2, x1 + tw + 2, y1))
    return rects


def test_labels_in_a_crowd_keep_off_each_other():
    # A real crowded test scene (17 faces, true boxes). In the video the labels carry track
    # ids: placed, far fewer hide each other than above every box as they used to be.
    image, faces = real_scene("maksssksksss388")
    rects = overlay.draw_labels(image.copy(), faces)
    assert len(rects) == len(faces)
    assert 5 * _overlapping_pairs(rects) <= _overlapping_pairs(_labels_above(faces))
    # A still photo has no track ids: there is room for every label, and none is hidden.
    for face in faces:
        face.track = None
    assert _overlapping_pairs(overlay.draw_labels(image.copy(), faces)) == 0
    assert _overlapping_pairs(_labels_above(faces)) >= 10


def test_two_faces_side_by_side_get_labels_that_do_not_collide():
    image = np.zeros((200, 200, 3), np.uint8)
    faces = [Face(np.array([50, 80, 90, 120], np.float32), 0.9, None, "mask", 0.97, None),
             Face(np.array([92, 80, 132, 120], np.float32), 0.9, None, "no_mask", 0.91, None)]
    first, second = overlay.draw_labels(image, faces)
    assert first[3] <= 80  # the first label sits above its face
    assert _overlapping_pairs([first, second]) == 0
    # Each label touches its own face's column, so it reads as that face's.
    assert first[0] < 90 and second[2] > 92


def test_small_faces_get_the_compact_label_and_stills_no_frame_rate():
    assert overlay.label_text("no_mask", 0.914, 3) == "#3 no_mask 91%"
    assert overlay.label_text("no_mask", 0.914, None, compact=True) == "91%"
    image = np.zeros((120, 300, 3), np.uint8)
    tiny = Face(np.array([100, 60, 110, 70], np.float32), 0.9, None, "no_mask", 0.91, None)
    (rect,) = overlay.draw_labels(image, [tiny])
    compact = cv2.getTextSize("91%", overlay.FONT, 0.4, 1)[0][0] + 2
    assert rect[2] - rect[0] == compact
    counts = {"mask": 2, "no_mask": 1, "incorrect": 1}
    still = [text for text, _ in overlay.hud_parts(None, counts)]
    assert not any("FPS" in text for text in still) and "compliance 50%" in still
    assert overlay.hud_parts(24.5, counts)[0][0] == "FPS 24.5"
    # The legend: each class's count carries its box colour.
    assert dict(overlay.hud_parts(None, counts))["incorrect 1"] == overlay.COLOURS["incorrect"]


def test_read_only_frame_is_copied_not_written():
    image, faces = real_scene()
    image.setflags(write=False)
    drawn = overlay.draw(image, faces, fps=10, counts=count_labels(faces))
    assert drawn is not image and not np.array_equal(drawn, image)


def test_blur_pixelates_faces_only():
    image, faces = real_scene()
    original = image.copy()
    overlay.draw(image, faces, blur=True, boxes=False)
    for face in faces:
        x1, y1, x2, y2 = [int(round(v)) for v in face.box]
        region = image[y1:y2, x1:x2].astype(np.float32)
        # Few distinct blocks remain: the detail (edges) of the face is gone.
        assert np.abs(np.diff(region, axis=1)).mean() < 0.5 * np.abs(
            np.diff(original[y1:y2, x1:x2].astype(np.float32), axis=1)).mean()
    mask = np.ones(image.shape[:2], bool)
    for face in faces:
        x1, y1, x2, y2 = [int(round(v)) for v in face.box]
        mask[y1:y2, x1:x2] = False
    assert np.array_equal(image[mask], original[mask])


def test_event_lines_have_every_key_and_consistent_counts(tmp_path):
    _, faces = real_scene()
    faces.append(Face(np.array([40, 40, 60, 62], np.float32), 0.7, None, "incorrect", 0.8, 99))
    faces.append(Face(np.array([1, 1, 9, 9], np.float32), 0.6))  # not classified: left out
    path = str(tmp_path / "sub" / "events.jsonl")
    writer = EventWriter(path, flush_every=2)
    writer.write(0, faces)
    assert open(path).read() == ""           # buffered until flush_every lines
    writer.write(1, faces[:1], {"pts": 0.1})
    assert len(open(path).read().splitlines()) == 2
    writer.write(2, [])
    writer.close()
    writer.close()  # twice is harmless
    lines = [json.loads(line) for line in io.open(path, encoding="utf-8")]
    assert [line["frame"] for line in lines] == [0, 1, 2]
    for line in lines:
        assert {"time", "run", "frame", "faces", "counts"} <= set(line)
        stamp = datetime.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert abs((datetime.datetime.utcnow() - stamp).total_seconds()) < 60
        assert set(line["counts"]) == {"mask", "no_mask", "incorrect"}
        assert sum(line["counts"].values()) == len(line["faces"])
        for face in line["faces"]:
            assert face["label"] in ("mask", "no_mask", "incorrect")
            assert face["compliant"] is (face["label"] == "mask")  # incorrect is non-compliant
            assert 0 <= face["score"] <= 1 and isinstance(face["track"], int)
            assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert len(lines[0]["faces"]) == len(faces) - 1
    assert lines[0]["counts"]["incorrect"] == 1 and lines[0]["faces"][-1]["compliant"] is False
    assert lines[1]["pts"] == 0.1


def test_events_to_stdout(capsys):
    _, faces = real_scene()
    writer = EventWriter("-")
    writer.write(7, faces)
    writer.close()
    line = json.loads(capsys.readouterr().out)
    assert line["frame"] == 7 and len(line["faces"]) == len(faces)


def test_face_saver_writes_crops(tmp_path):
    image, faces = real_scene()
    saver = FaceSaver(str(tmp_path / "faces"))
    paths = [saver.save(image, face, 3) for face in faces]
    assert saver.saved == len(faces)
    crop = cv2.imread(paths[0])
    x1, y1, x2, y2 = [int(round(v)) for v in faces[0].box]
    assert crop.shape[:2] == (y2 - y1, x2 - x1)
    assert os.path.basename(paths[0]) == "000003_1_%s.jpg" % faces[0].label


def test_the_hud_wraps_on_a_narrow_photo_instead_of_running_off_it(monkeypatch):
    """A small photo (fmd's are 100-300 px wide): at the smallest legible size the status line
    does not fit, so it wraps; every part is drawn inside the image. A wide frame keeps one line."""
    image, faces = real_scene()
    counts = count_labels(faces)
    drawn_text = []
    put_text = cv2.putText

    def spy(img, text, origin, font, scale, *args, **kwargs):
        drawn_text.append((text, origin, cv2.getTextSize(text, font, scale, 1)[0][0]))
        return put_text(img, text, origin, font, scale, *args, **kwargs)

    monkeypatch.setattr(overlay.cv2, "putText", spy)
    narrow = np.ascontiguousarray(image[:, :240])
    _, _, _, band_height = overlay.draw_hud(narrow, None, counts)
    texts = [text for text, _, _ in drawn_text]
    assert texts == [text for text, _ in overlay.hud_parts(None, counts)]  # all of them, in order
    assert all(x + width <= narrow.shape[1] for _, (x, _), width in drawn_text)
    assert len(set(y for _, (_, y), _ in drawn_text)) >= 2  # more than one line
    del drawn_text[:]
    wide = np.zeros((720, 1280, 3), np.uint8)
    _, _, _, wide_height = overlay.draw_hud(wide, 24.5, counts)
    assert len(set(y for _, (_, y), _ in drawn_text)) == 1 and wide_height < band_height * 1.5
