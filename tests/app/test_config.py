"""Settings: defaults, user file, flags, and errors that name the key and accepted values."""
import argparse

import pytest
import yaml

from edge.app import config
from edge.common import resolve_path
from edge.errors import ConfigError


def parse(argv):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.overrides_from_args(parser.parse_args(argv))


def test_defaults_file_and_schema_list_the_same_settings():
    with open(config.DEFAULT_PATH) as stream:
        flat = config.flatten(yaml.safe_load(stream), "defaults")
    assert sorted(flat) == sorted(s.key for s in config.SCHEMA)
    loaded = config.load()
    assert loaded["detector"]["name"] in config.DETECTORS
    assert loaded["classifier"]["model"] == "models/mask_classifier.onnx"
    assert loaded["events"]["save_faces"] is False  # no face image unless the owner asks


def test_every_setting_has_a_flag_and_the_defaults_comment_each_one():
    text = open(config.DEFAULT_PATH).read()
    for setting in config.SCHEMA:
        if setting.key not in ("input", "outputs"):  # the positional arguments
            assert setting.flag, setting.key
        leaf = setting.key.split(".")[-1] + ":"
        before = text[:text.index("\n" + "  " * setting.key.count(".") + leaf)]
        assert before.rstrip().splitlines()[-1].lstrip().startswith("#"), setting.key


def test_file_then_flags_override_defaults(tmp_path):
    user = tmp_path / "site.yaml"
    user.write_text("detector:\n  name: haar\n  confidence: 0.7\nclassifier:\n  every: 5\n")
    merged = config.load(str(user), parse(["--confidence", "0.4", "--no-overlay",
                                           "--max-batch", "none", "--events", "-"]))
    assert merged["detector"]["name"] == "haar"        # from the file
    assert merged["detector"]["confidence"] == 0.4     # the flag wins over the file
    assert merged["classifier"]["every"] == 5
    assert merged["classifier"]["max_batch"] is None
    assert merged["overlay"]["enabled"] is False
    assert merged["events"]["path"] == "-"
    assert merged["tracker"] == config.defaults()["tracker"]  # untouched sections stay


def test_bad_choice_names_key_and_accepted_values():
    with pytest.raises(ConfigError) as err:
        config.load(overrides=parse(["--detector", "yolo"]))
    assert "detector.name" in str(err.value) and "haar, ssd, retinaface" in str(err.value)


def test_wrong_type_and_range_in_a_file(tmp_path):
    user = tmp_path / "bad.yaml"
    user.write_text("tracker:\n  iou: high\n")
    with pytest.raises(ConfigError) as err:
        config.load(str(user))
    assert "tracker.iou" in str(err.value) and "[0.0, 1.0]" in str(err.value) and str(user) in str(err.value)
    user.write_text("overlay:\n  enabled: 3\n")
    with pytest.raises(ConfigError, match="overlay.enabled.*true or false"):
        config.load(str(user))


def test_unknown_key_lists_the_known_ones(tmp_path):
    user = tmp_path / "typo.yaml"
    user.write_text("detector:\n  confidense: 0.3\n")
    with pytest.raises(ConfigError) as err:
        config.load(str(user))
    assert "detector.confidense" in str(err.value)
    assert "confidence" in str(err.value) and "nms_iou" in str(err.value)
    user.write_text("trackr: {}\n")
    with pytest.raises(ConfigError, match="known keys: .*tracker"):
        config.load(str(user))


def test_unreadable_or_invalid_yaml_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nowhere.yaml"):
        config.load(str(tmp_path / "nowhere.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("detector: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        config.load(str(broken))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        config.load(str(listy))


def test_bad_flag_value_is_a_usage_error():
    with pytest.raises(SystemExit):
        parse(["--max-batch", "many"])


def test_relative_model_path_resolves_next_to_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = resolve_path("edge/app/default_config.yaml")
    assert resolved == config.DEFAULT_PATH
    assert resolve_path("not/there.onnx") == "not/there.onnx"


def _help(parser):
    return " ".join(parser.format_help().split())


def test_help_shows_every_default_and_commands_show_only_what_acts():
    from edge.app.service import build_parser as service_parser
    from edge.measure.bench import build_parser as bench_parser
    from edge.measure.evaluate import build_parser as evaluate_parser
    service = _help(service_parser())
    assert "minimum face confidence (null: the detector file's operating point, else 0.3) (a number in " \
        "[0.0, 1.0] or null; default null;" in service
    assert "never open a display (default off;" in service
    assert "--max-missed" in service and "--max-age" not in service  # it counts detector runs
    evaluate = _help(evaluate_parser())
    assert "--confidence" in evaluate and "--vote" in evaluate  # what detects, classifies, tracks
    for absent in ("--events", "--health-http", "--bitrate", "--latency", "--headless", "--baseline"):
        assert absent not in evaluate, absent
    bench = _help(bench_parser())
    assert "--events" in bench and "--bitrate" in bench and "--vs-baseline" in bench
    assert "--health-http" in bench and "--mqtt" in bench  # their cost is measured
    for absent in ("--health-file", "--log-level", "--headless"):
        assert absent not in bench, absent


def test_the_retired_output_token_says_what_replaced_it(tmp_path):
    """output.token was both the MJPEG token and the RTSP password: an old config is told which
    setting now holds which, from the file and from the old flag alike."""
    old = tmp_path / "old.yaml"
    old.write_text("output:\n  token: s3cret\n")
    for attempt in (lambda: config.load(str(old)), lambda: config.load(overrides=parse(["--output-token", "x"]))):
        with pytest.raises(ConfigError) as err:
            attempt()
        text = str(err.value)
        assert "output.http_token" in text and "output.rtsp_password" in text and "unknown" not in text
    both = config.load(overrides=parse(["--http-token", "a", "--rtsp-password", "b", "--rtsp-user", "cam"]))
    assert (both["output"]["http_token"], both["output"]["rtsp_password"], both["output"]["rtsp_user"]) == \
        ("a", "b", "cam")
    assert config.defaults()["output"]["rtsp_user"] == "viewer"
