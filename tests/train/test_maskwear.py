"""Synthesized mask wearing (train.maskwear) on real faces of the shared data.

Landmarks must be where a face has them, and each placement must cover what it claims:
``mask`` the nose and mouth, ``incorrect_nose`` the mouth but not the nose tip,
``incorrect_chin`` neither. Faces are kaggle853 train scenes with one large, frontal face.
"""
import collections
import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, data_path
from train.maskwear import __main__ as cli
from train.maskwear import landmarks, placement, sources, synth

MODELS = os.path.join(ROOT, "models", "detectors")
MASKED = ("maksssksksss10", 0)  # scene, face index: a large frontal masked face
BARE = (("maksssksksss217", 0), ("maksssksksss218", 0), ("maksssksksss128", 0))


@pytest.fixture(scope="module")
def finder():
    if not os.path.isfile(os.path.join(MODELS, "retinaface_mnet025.onnx")):
        pytest.skip("RetinaFace not provisioned in %s (run `make models`)" % MODELS)
    return landmarks.LandmarkFinder(MODELS)


def scene_face(scene, index):
    """The ``sources.Candidate`` of face ``index`` of a kaggle853 scene."""
    root = data_path("kaggle853")
    faces = [c for label in ("mask", "no_mask") for c in sources.scene_faces(root, "kaggle853", label)]
    wanted = "kaggle853-%s-f%d" % (scene, index)
    found = [c for c in faces if c.id == wanted]
    if not found:
        pytest.skip("%s is not a train face in %s" % (wanted, root))
    return found[0]


@pytest.fixture(scope="module")
def pool(finder):
    skips = collections.Counter()
    pool = synth.build_textures(finder, [scene_face(*MASKED)], skips)
    assert len(pool) == 1, skips
    return pool


def window(image, centre, half):
    """The pixels within ``half`` px of ``centre`` (x, y), as float32."""
    x, y = int(round(centre[0])), int(round(centre[1]))
    return image[max(0, y - half):y + half + 1, max(0, x - half):x + half + 1].astype(np.float32)


def test_landmarks_of_a_real_face_are_plausible(finder):
    for scene, index in BARE + (MASKED,):
        c = scene_face(scene, index)
        face = finder.find(synth.load(c.path), c.box)
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
        assert face.score >= landmarks.MIN_SCORE
        assert lx < nx < rx and mlx < mrx, face.landmarks
        assert max(ly, ry) < ny < min(mly, mry), face.landmarks  # eyes above nose above mouth
        x1, y1, x2, y2 = c.box
        assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
        assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_placement_covers_what_it_claims(finder, pool, seed):
    for scene, index in BARE:
        result = synth.synthesize(finder, scene_face(scene, index), pool, seed=seed)
        x1, y1, x2, y2 = result.crop_box
        before = synth.load(result.candidate.path)[y1:y2, x1:x2]
        marks = result.face.landmarks - np.array([x1, y1], np.float32)
        eye_dist = float(np.linalg.norm(marks[1] - marks[0]))
        nose, mouth = marks[2], marks[3:].mean(0)
        half = max(2, int(0.08 * eye_dist))

        def change(name, centre):
            after = result.images[(0, name)]
            return float(np.abs(window(after, centre, half) - window(before, centre, half)).mean())

        assert change("mask", nose) > 5 and change("mask", mouth) > 5
        assert change("incorrect_nose", nose) < 1 and change("incorrect_nose", mouth) > 5
        assert change("incorrect_chin", nose) < 1 and change("incorrect_chin", mouth) < 1


def test_same_seed_same_images_other_seed_other_jitter(finder, pool):
    c = scene_face(*BARE[0])
    a, b = (synth.synthesize(finder, c, pool, seed=3) for _ in range(2))
    other = synth.synthesize(finder, c, pool, seed=4)
    assert all(np.array_equal(a.images[k], b.images[k]) for k in a.images)
    assert a.wearings[0].jitter == b.wearings[0].jitter != other.wearings[0].jitter


def test_faceless_images_are_skipped(finder):
    grey = np.full((240, 240, 3), 127, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (240, 240, 3), dtype=np.uint8)
    for image in (grey, noise):
        with pytest.raises(landmarks.Skip):
            finder.find(image, (60.0, 50.0, 180.0, 190.0))
        with pytest.raises(landmarks.Skip):
            finder.find(image)
    with pytest.raises(landmarks.Skip) as small:
        finder.find(grey, (10.0, 10.0, 30.0, 32.0))
    assert small.value.reason == "face_too_small"


def _mini_set(tmp_path):
    """A kaggle853-shaped set: three real train scenes, a grey and a noise 'face'."""
    src = data_path("kaggle853")
    root = tmp_path / "data" / "kaggle853"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    scenes = [MASKED[0], BARE[0][0], BARE[1][0]]
    for scene in scenes:
        shutil.copy(os.path.join(src, "images", scene + ".jpg"), root / "images")
        shutil.copy(os.path.join(src, "annotations", scene + ".xml"), root / "annotations")
    rng = np.random.default_rng(0)
    fakes = {"grey": np.full((300, 300, 3), 127, np.uint8),
             "noise": rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)}
    for name, pixels in fakes.items():
        Image.fromarray(pixels).save(root / "images" / (name + ".jpg"))
        (root / "annotations" / (name + ".xml")).write_text(
            "<annotation><filename>%s.jpg</filename><object><name>without_mask</name><bndbox>"
            "<xmin>80</xmin><ymin>70</ymin><xmax>200</xmax><ymax>220</ymax></bndbox></object>"
            "</annotation>" % name)
    with open(root / "splits.csv", "w") as f:
        f.write("image,split\n" + "".join("%s.jpg,train\n" % s for s in scenes + list(fakes)))
    return tmp_path / "data"


def test_cli_writes_a_dataset_and_counts_skips(tmp_path):
    data = _mini_set(tmp_path)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        summary = cli.main(["--data", str(data), "--out", str(out), "--seed", "5", "--models", MODELS])
        with open(out / "manifest.csv") as f:
            runs.append((summary, list(csv.DictReader(f))))
    summary, rows = runs[0]
    assert summary["targets"]["used"] == 2 and summary["textures"]["kept"] >= 1
    assert sum(summary["targets"]["skipped"].values()) == 2, summary["targets"]["skipped"]
    assert summary["by_label"] == {"mask": 2, "incorrect": 4}
    assert summary["sources"]["kaggle853"]["licence"] == "CC0-1.0"
    assert json.load(open(tmp_path / "a" / "summary.json"))["images"] == 6
    assert {r["placement"] for r in rows} == set(placement.PLACEMENTS)
    for r in rows:
        assert r["file"].startswith(r["label"] + os.sep) and r["target"] in r["file"]
        assert r["group"] == r["target"] and r["texture"] in r["file"]
        assert os.path.isfile(tmp_path / "a" / r["file"])
    assert os.path.isfile(tmp_path / "a" / "sheet.png")
    assert rows == [dict(r) for r in runs[1][1]]  # same seed, same data set
    for r in rows:
        assert open(tmp_path / "a" / r["file"], "rb").read() == open(tmp_path / "b" / r["file"], "rb").read()
    with pytest.raises(SystemExit):  # an earlier data set is never mixed with a new one
        cli.main(["--data", str(data), "--out", str(tmp_path / "a"), "--models", MODELS])


def test_sources_are_train_faces_with_unique_ids(tmp_path):
    root = data_path("kaggle853")
    split = {}
    with open(os.path.join(root, "splits.csv")) as f:
        split = {row["image"]: row["split"] for row in csv.DictReader(f)}
    for kind in ("masked", "bare"):
        faces, used = sources.candidates(os.path.dirname(root), kind, ["kaggle853"])
        assert used == ["kaggle853"] and len({c.id for c in faces}) == len(faces)
        assert {split[os.path.basename(c.path)] for c in faces} == {"train"}
    # file names that one id would share: the extension and the checksum keep them apart
    folder = tmp_path / "fmd" / "without_mask"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "a.png", "a b.jpg", "a_b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / name)
    faces = sources.folder_faces(str(tmp_path / "fmd"), "fmd", "no_mask")
    assert faces and len({c.id for c in faces}) == len(faces)
    same = [sources.Candidate("fmd-x_a_b.jpg", "fmd", p, None, "fmd-x_a_b.jpg") for p in ("x/a b.jpg", "x/a_b.jpg")]
    apart = sources.unique_ids(same)
    assert apart[0].id != apart[1].id and all(c.group == c.id for c in apart)
