"""Data readers and hygiene on real shared images and on broken files made here."""
import collections
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import data_path, require_detectors
from train import data


def _write_tree(tmp_path):
    fmd = data_path("fmd")
    masked = sorted(os.listdir(os.path.join(fmd, "with_mask")))
    bare = sorted(os.listdir(os.path.join(fmd, "without_mask")))
    root = tmp_path / "set"
    (root / "with_mask").mkdir(parents=True)
    (root / "nomask").mkdir()
    for name in [n for n in masked if n.endswith(".jpg")][:12]:
        shutil.copy(os.path.join(fmd, "with_mask", name), root / "with_mask" / name)
    for name in bare[:12]:
        shutil.copy(os.path.join(fmd, "without_mask", name), root / "nomask" / name)
    real = os.path.join(fmd, "without_mask", bare[0])
    (root / "nomask" / "empty.jpg").write_bytes(b"")
    (root / "nomask" / "notes.txt").write_text("not an image")
    truncated = open(real, "rb").read()
    (root / "nomask" / "truncated.jpg").write_bytes(truncated[:200])
    shutil.copy(real, root / "nomask" / "copy_of_first.jpg")  # exact duplicate
    rgb = np.asarray(Image.open(real).convert("RGB"))
    Image.fromarray(rgb).convert("L").save(root / "nomask" / "gray.png")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "with_mask" / "alpha.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "nomask" / "cmyk.jpg")
    Image.fromarray(rgb).save(root / "nomask" / "really_png.jpg", format="PNG")
    Image.fromarray(rgb[:5, :5]).save(root / "nomask" / "tiny.png")
    return root


def test_hygiene_counts_every_reason_and_keeps_going(tmp_path):
    root = _write_tree(tmp_path)
    samples = data.load_source(str(root))
    kept, hygiene = data.clean(samples, min_size=8)
    counts = hygiene.counts
    assert counts["empty_file"] == 1
    assert counts["not_an_image_or_corrupt"] == 2  # the text file and the truncated JPEG
    assert counts["exact_duplicate_removed"] == 1
    assert counts["converted_gray_to_rgb"] == 1
    assert counts["converted_alpha_to_rgb"] == 1
    assert counts["converted_cmyk_to_rgb"] == 1
    assert counts["wrong_extension_.jpg_is_PNG"] == 1
    assert counts["below_min_size_8px"] == 1
    names = {os.path.basename(s.path) for s in kept}
    assert {"gray.png", "alpha.png", "cmyk.jpg", "really_png.jpg"} <= names
    assert not {"empty.jpg", "notes.txt", "truncated.jpg", "tiny.png"} & names
    assert {s.label for s in kept} == {"mask", "no_mask"}
    for s in kept:  # everything decodes to 3-channel RGB
        assert data.read_rgb(s.path).shape[2] == 3


def test_unknown_class_folder_names_it_and_lists_accepted(tmp_path):
    (tmp_path / "with_mask").mkdir()
    (tmp_path / "sunglasses").mkdir()
    with pytest.raises(data.DataError) as err:
        data.load_source(str(tmp_path))
    assert "sunglasses" in str(err.value) and "non-compliant" in str(err.value)


def test_sfmask_layout_keeps_its_test_folder_and_carves_val(tmp_path):
    fmd = data_path("fmd")
    for split in ("train", "test"):
        for cls, src in (("compliant", "with_mask"), ("non-compliant", "without_mask")):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            names = sorted(os.listdir(os.path.join(fmd, src)))
            for name in names[:20] if split == "train" else names[-5:]:
                shutil.copy(os.path.join(fmd, src, name), folder / name)
    samples, _ = data.prepare([str(tmp_path)], ["mask", "no_mask"])
    splits = collections.Counter((s.split, s.label) for s in samples)
    assert splits[("test", "mask")] == 5 and splits[("test", "no_mask")] == 5
    assert splits[("val", "mask")] >= 2 and splits[("val", "no_mask")] >= 2


def test_voc_crops_match_known_boxes():
    root = data_path("kaggle853")
    samples = [s for s in data.read_voc(root) if os.path.basename(s.path) == "maksssksksss0.jpg"]
    assert [(s.label, s.box) for s in samples] == [
        ("no_mask", (79.0, 105.0, 109.0, 142.0)),
        ("mask", (185.0, 100.0, 226.0, 144.0)),
        ("no_mask", (325.0, 90.0, 360.0, 141.0)),
    ]
    assert {s.split for s in samples} == {"train"}  # from splits.csv
    from edge.infer.preprocess import expand_box
    # 15% of 30 x 37 px on each side: 4.5 -> 4 (banker's rounding of x1), 5.55 -> 6 px
    assert expand_box(samples[0].box, 0.15, 512, 366) == (74, 99, 114, 148)


def test_splits_are_stratified_and_share_no_image_or_near_copy():
    samples, hygiene = data.prepare([data_path("fmd")], ["mask", "no_mask"], seed=3)
    assert hygiene.counts["exact_duplicate_removed"] == 104  # as the data README says
    by_split = collections.defaultdict(collections.Counter)
    for s in samples:
        by_split[s.split][s.label] += 1
    for split, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        for label in ("mask", "no_mask"):
            total = sum(by_split[x][label] for x in by_split)
            assert abs(by_split[split][label] / total - share) < 0.02
    groups = collections.defaultdict(set)
    for s in samples:
        groups[s.group].add(s.split)
    assert all(len(v) == 1 for v in groups.values())
    paths = collections.defaultdict(set)
    for s in samples:
        paths[s.path].add(s.split)
    assert all(len(v) == 1 for v in paths.values())


def test_subset_is_representative():
    samples, _ = data.prepare([data_path("kaggle853")], ["mask", "no_mask"])
    small = data.subset(samples, 0.1)
    full = collections.Counter((s.split, s.label) for s in samples)
    part = collections.Counter((s.split, s.label) for s in small)
    for key, n in full.items():
        assert abs(part[key] - round(n * 0.1)) <= 1


def test_face_crop_frames_whole_images_like_the_edge_and_caches(tmp_path, monkeypatch):
    from train import facecrop
    require_detectors()
    folder = data_path("fmd", "with_mask")
    paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder))[:4]]
    blank = str(tmp_path / "wall.png")
    Image.fromarray(np.full((200, 160, 3), 90, np.uint8)).save(blank)  # no face in it
    scene = data.Sample(paths[0], (1.0, 2.0, 30.0, 40.0), "mask", "test", "s", "scene")
    samples = [data.Sample(p, None, "mask", "train", p, "fmd") for p in paths + [blank]] + [scene]
    hygiene = data.Hygiene()
    cache = str(tmp_path / "cache")
    kept = facecrop.find_faces(samples, "retinaface", hygiene, cache_dir=cache, show=False)
    assert hygiene.counts["no_face_found_by_retinaface"] == 1 and kept[-1] == scene
    assert [s.path for s in kept[:-1]] == paths
    for s in kept[:-1]:
        h, w = data.read_rgb(s.path).shape[:2]
        x1, y1, x2, y2 = s.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert (x2 - x1) * (y2 - y1) > 0.1 * w * h  # the face, not a speck: these are portraits
    # The second pass reads the cache: no detector is built.
    monkeypatch.setattr("edge.infer.detect.create_detector", lambda *a, **k: pytest.fail("detected again"))
    again = facecrop.find_faces(samples, "retinaface", data.Hygiene(), cache_dir=cache, show=False)
    assert again == kept


def test_three_classes_are_read_from_all_four_sources():
    """Every source of the three-class recipe through the one reader, with the counts its README gives."""
    expected = {"kaggle853": {"mask": 3231, "no_mask": 718, "incorrect": 123},
                "moxa3k": {"mask": 5904, "no_mask": 2238},
                "bijoy_webcam": {"mask": 796, "no_mask": 1016, "incorrect": 486},
                "fmd": {"mask": 2164, "no_mask": 1930}}
    for name, counts in expected.items():
        samples = data.load_source(data_path(name))
        assert dict(collections.Counter(s.label for s in samples)) == counts, name
        assert {s.source for s in samples} == {name}


def _synthetic_set(tmp_path, faces=3):
    """A made-up synthesized set: per face, 1 mask and 2 incorrect images and a manifest row each."""
    bare = data_path("fmd", "without_mask")
    root = tmp_path / "synth"
    rows = ["file,label,placement,group"]
    for label in ("mask", "incorrect"):
        (root / label).mkdir(parents=True)
    for k, name in enumerate(sorted(os.listdir(bare))[:faces]):
        for label, variants in (("mask", 1), ("incorrect", 2)):
            for v in range(variants):
                rel = "%s/face%d_%d.jpg" % (label, k, v)
                rgb = np.asarray(Image.open(os.path.join(bare, name)).convert("RGB")).copy()
                channel = v + (1 if label == "incorrect" else 0)
                rgb[:, :, channel] = 255 - rgb[:, :, channel]  # distinct bytes: not exact duplicates
                Image.fromarray(rgb).save(str(root / rel))
                rows.append("%s,%s,x,face%d" % (rel, label, k))
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_train_only_sources_and_weights(tmp_path):
    """A webcam set's near-copies and a synthesized face's variants count as one face each;
    train-only sets never reach val or test; synthesized faces make up the asked share."""
    root = _write_tree(tmp_path)
    synth = _synthetic_set(tmp_path)
    samples, _ = data.prepare([str(root)], ["mask", "no_mask", "incorrect"], train_only=[str(synth)],
                              synthetic_share=0.25)
    made = [s for s in samples if s.source == "synth"]
    assert len(made) == 9 and {s.split for s in made} == {"train"}
    assert {s.group for s in made} == {"face0", "face1", "face2"}  # from the manifest
    real_mask = sum(s.weight for s in samples if s.split == "train" and s.label == "mask" and s.source != "synth")
    synth_mask = sum(s.weight for s in made if s.label == "mask")
    assert synth_mask / (synth_mask + real_mask) == pytest.approx(0.25)
    # incorrect has no real faces here: its synthesized faces keep one weight per face and variant group
    assert sum(s.weight for s in made if s.label == "incorrect") == pytest.approx(3.0)
    copies = [s for s in samples if s.group != s.path and s.source == "set"]  # near-copy groups of fmd
    for s in copies:
        size = sum(1 for o in samples if (o.source, o.group, o.label) == (s.source, s.group, s.label))
        assert s.weight == pytest.approx(1.0 / size)
