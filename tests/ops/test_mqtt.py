"""MQTT against a real Mosquitto broker that the tests start, with a real subscriber."""
import json
import logging
import re
import subprocess
import sys
import time

import pytest
from mqtt_broker import Broker, Subscriber

from conftest import ROOT, data_path, require_detectors
from edge.errors import ConfigError
from edge.ops.mqtt import MqttPublisher, parse_url

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install .[mqtt])")

STATUS_KEYS = {"time", "fps", "faces", "people", "compliance", "source", "compliant", "non_compliant", "window"}
PERSON_KEYS = {"track", "label", "compliant", "score", "first_seen", "last_seen"}
ALERT_KEYS = {"time", "rule", "text"}


def test_parse_url():
    assert parse_url("mqtt://broker.lan/site/door1") == {
        "host": "broker.lan", "port": 1883, "tls": False, "username": None, "password": None,
        "prefix": "site/door1"}
    tls = parse_url("mqtts://cam%40site:p%3Ass@[::1]:8884/")
    assert (tls["host"], tls["port"], tls["tls"]) == ("::1", 8884, True)
    assert (tls["username"], tls["password"], tls["prefix"]) == ("cam@site", "p:ss", "maskgate")
    assert parse_url("mqtts://h")["port"] == 8883
    for bad in ("http://h/x", "mqtt:///x", "mqtt://h:0/x", "mqtt://h/a/+/b", "mqtt://h/a//b"):
        with pytest.raises(ConfigError):
            parse_url(bad)
    with pytest.raises(ConfigError) as err:
        parse_url("tcp://user:hunter2@h/x")
    assert "hunter2" not in str(err.value)  # never echoed


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.kill()


@pytest.mark.slow
def test_the_service_sends_status_people_and_alerts_that_parse_with_their_keys(broker):
    """The real service on the demo video: every message arrives, parses and has its keys."""
    video = data_path("videos", "kaggle853_test_scenes.mp4")
    require_detectors()
    sub = Subscriber(broker, "demo/#")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge", video, "none", "--headless", "--max-frames", "150",
             "--backend", "ort", "--mqtt", broker.url("demo"), "--mqtt-status-every", "0.5",
             "--alert-hold-off", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=300)
        log = proc.stdout.decode()
        assert proc.returncode == 0, log
        # The last message of a run: the retained online flag goes false.
        assert sub.wait_for(lambda got: ("demo/online", b'{"online": false}') in got), sub.received()
    finally:
        sub.close()
    counted = re.search(r"people counted: (\d+) \(mask (\d+), no_mask (\d+), incorrect (\d+)\)", log)
    assert counted, log
    total, mask, no_mask, incorrect = [int(g) for g in counted.groups()]
    persons = sub.documents("demo/person")
    assert len(persons) == total > 10                      # one message per person, none lost
    assert len(set(p["track"] for p in persons)) == total  # each person once
    for person in persons:
        assert PERSON_KEYS <= set(person)
        assert person["compliant"] == (person["label"] == "mask") and 0 < person["score"] <= 1
        assert person["first_seen"] <= person["last_seen"]
    assert sum(p["label"] == "no_mask" for p in persons) == no_mask > 0
    statuses = sub.documents("demo/status")
    assert len(statuses) >= 2
    for status in statuses:
        assert STATUS_KEYS <= set(status), status
        assert set(status["people"]) == {"mask", "no_mask", "incorrect"}
    assert statuses[-1]["people"] == {"mask": mask, "no_mask": no_mask, "incorrect": incorrect}
    assert statuses[-1]["compliance"] == pytest.approx(mask / float(total), abs=1e-3)
    alerts = sub.documents("demo/alert")
    assert alerts and all(ALERT_KEYS <= set(a) and a["rule"] == "non_compliant" for a in alerts)
    # With the hold-off, alerts gather people: every non-compliant person is in exactly one.
    alerted = [t for a in alerts for t in a["tracks"]]
    assert sorted(alerted) == sorted(p["track"] for p in persons if not p["compliant"])


def publish_timed(publisher, seqs, pause=0.002):
    """Publish seq numbers like a camera loop; returns the longest publish() call in seconds."""
    longest = 0.0
    for seq in seqs:
        start = time.perf_counter()
        publisher.publish("status", {"seq": seq})
        longest = max(longest, time.perf_counter() - start)
        time.sleep(pause)
    return longest


@pytest.mark.slow
def test_broker_killed_and_restarted_loses_only_what_the_buffer_bound_allows(broker):
    sub = Subscriber(broker, "outage/#")
    time.sleep(1.5)  # the broker saves the subscriber's session to disk every second
    publisher = MqttPublisher(broker.url("outage"), buffer=100, inflight=10, backoff=(0.2, 1.0))

    def seqs(got):
        return set(json.loads(payload)["seq"] for topic, payload in got if topic == "outage/status")
    try:
        assert sub.wait_for(lambda got: ("outage/online", b'{"online": true}') in got)
        slowest = publish_timed(publisher, range(0, 200))
        assert sub.wait_for(lambda got: seqs(got) >= set(range(200)))
        broker.kill()                               # SIGKILL: mid-run, no goodbye
        slowest = max(slowest, publish_timed(publisher, range(200, 600)))
        assert not publisher.connected and publisher.dropped > 0
        broker.start()
        deadline = time.monotonic() + 10
        while not publisher.connected and time.monotonic() < deadline:  # back-off: 1 s at most
            slowest = max(slowest, publish_timed(publisher, [], 0))
            time.sleep(0.05)
        assert publisher.connected
        slowest = max(slowest, publish_timed(publisher, range(600, 700)))
        assert publisher.flush(20.0), publisher.stats()
        assert sub.wait_for(lambda got: 699 in seqs(got))
        time.sleep(0.5)                             # duplicates (QoS 1 re-sends) may trail
    finally:
        publisher.close()
        sub.close()
    got = seqs(sub.received())
    missing = sorted(set(range(700)) - got)
    stats = publisher.stats()
    # Only messages published while the broker was down are lost, exactly those counted
    # as dropped, and at most what exceeded the buffer (100) during the outage (400 sent).
    assert len(missing) == stats["dropped"] > 0
    assert all(200 <= s < 600 for s in missing)
    assert 400 - 100 - publisher.inflight_max <= len(missing) <= 400 - 100
    # The oldest are dropped: the lost ones are one run, and the newest 100 all arrived.
    assert missing == list(range(missing[0], missing[0] + len(missing)))
    assert set(range(500, 600)) <= got
    assert stats["connects"] == 2 and stats["buffered"] == 0
    # The camera loop never waited for the network, the outage included.
    assert slowest < 0.05, slowest


def make_ca(folder):
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=str(folder), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=maskgate test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
        "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
    return str(folder / "ca.crt")


def logged(caplog, pattern, timeout=30.0):
    """Whether a log message matching ``pattern`` appears within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, "\n".join(r.getMessage() for r in caplog.records)):
            return True
        time.sleep(0.1)
    return False


def test_tls_with_a_ca_file_and_a_login_and_the_password_is_never_logged(tmp_path, caplog):
    import shutil
    if not shutil.which("openssl") or not shutil.which("mosquitto_passwd"):
        pytest.skip("openssl or mosquitto_passwd missing")
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = make_ca(certs)
    passwords = str(tmp_path / "passwords")
    subprocess.run(["mosquitto_passwd", "-b", "-c", passwords, "camera", "s3cret-pw"], check=True)
    broker = Broker(tmp_path, ["allow_anonymous false", "password_file %s" % passwords,
                               "cafile %s" % ca, "certfile %s/server.crt" % certs,
                               "keyfile %s/server.key" % certs]).start()
    caplog.set_level(logging.DEBUG)
    sub = Subscriber(broker, "tls/#", tls_ca=ca, host="localhost", login=("camera", "s3cret-pw"))
    good = bad = None
    try:
        good = MqttPublisher(broker.url("tls", "mqtts", "localhost", "camera:s3cret-pw@"), ca_file=ca)
        good.publish("person", {"track": 1})
        assert sub.wait_for(lambda got: ("tls/person", b'{"track":1}') in got)
        # A wrong password is refused (and said so), nothing it sends arrives.
        bad = MqttPublisher(broker.url("tlsbad", "mqtts", "localhost", "camera:wrong-pw@"), ca_file=ca,
                            client_id="maskgate-bad")
        bad.publish("person", {"track": 2})
        assert logged(caplog, "refused the connection")  # polled: a loaded CI machine is slow to try
        assert not bad.connected and bad.buffered == 1
        # A broker certificate the CA did not sign is refused too.
        other = tmp_path / "other"
        other.mkdir()
        stranger = MqttPublisher(broker.url("tls", "mqtts", "localhost", "camera:s3cret-pw@"),
                                 ca_file=make_ca(other), client_id="maskgate-stranger")
        assert logged(caplog, "cannot connect to MQTT broker .*certificate verify failed")
        assert not stranger.connected
        stranger.close(0.5)
        with pytest.raises(ConfigError, match="mqtt_ca"):
            MqttPublisher(broker.url("tls", "mqtts"), ca_file=str(tmp_path / "missing.crt"))
    finally:
        for p in (good, bad):
            if p is not None:
                p.close(1.0)
        sub.close()
        broker.kill()
    assert all(t.startswith("tls/") for t, _ in sub.received())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused the connection: Connection Refused: not authorised" in text
    assert "s3cret-pw" not in text and "wrong-pw" not in text
    assert "camera:***@localhost" in text
