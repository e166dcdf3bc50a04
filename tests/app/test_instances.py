"""More cameras: the template unit systemd/maskgate@.service, the instance settings the installer
writes (systemd/maskgate@.yaml), and two instances run from them as child processes."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, SHIPPED, data_path
from edge.app import config as cfg

TEMPLATE = os.path.join(ROOT, "systemd", "maskgate@.service")
PREFIX = "/opt/maskgate"
# What differs between one camera and the next; every other line is maskgate.service's own.
PER_INSTANCE = {"Description", "ExecStart", "StateDirectory", "RuntimeDirectory", "SyslogIdentifier"}


def settings(name):
    found = {}
    with open(os.path.join(ROOT, "systemd", name)) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                found.setdefault(key, []).append(value)
    return found


def test_template_is_the_service_with_per_instance_paths():
    single, template = settings("maskgate.service"), settings("maskgate@.service")
    differs = set(k for k in set(single) | set(template) if single.get(k) != template.get(k))
    assert differs == PER_INSTANCE
    assert template["ExecStart"] == [
        PREFIX + "/.venv/bin/python -m edge --config /etc/maskgate/%i.yaml "
        "--events /var/lib/maskgate/%i/events.jsonl --health-file /run/maskgate-%i/health.json"]
    # The events file lies in a state directory of its own, the health file in a runtime one
    # that stopping maskgate.service (RuntimeDirectory=maskgate) cannot remove.
    assert template["StateDirectory"] == ["maskgate/%i maskgate/engines"]
    assert template["RuntimeDirectory"] == ["maskgate-%i"]
    assert template["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_template_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil_which("systemd-analyze")
    prefix = tmp_path / "opt"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, str(prefix / ".venv" / "bin" / "python"))
    with open(TEMPLATE) as f:
        text = f.read().replace(PREFIX, str(prefix))
    unit = tmp_path / "maskgate@cam1.service"  # an instance of the template, as systemd loads it
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", str(unit)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode == 0 and proc.stdout.decode().strip() == "", proc.stdout.decode()


def shutil_which(name):
    import shutil
    path = shutil.which(name)
    if not path:
        pytest.skip("%s not installed (apt-get install systemd)" % name)
    return path


def installer(conf_dir, *commands):
    """Run functions of scripts/install-jetson.sh (sourced: it defines them and does nothing else)."""
    script = "source %s; CONF_DIR=%s; %s" % (shlex.quote(os.path.join(ROOT, "scripts", "install-jetson.sh")),
                                             shlex.quote(str(conf_dir)), "; ".join(commands))
    proc = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def test_installer_writes_valid_instance_settings_on_free_ports(tmp_path):
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "config.yaml").write_text("health:\n  http: 127.0.0.1:8081\n")
    (conf / "config.default.yaml").write_text("health:\n  http: null\n")
    assert installer(conf, "next_free_port 8082").strip() == "8082"
    (conf / "door.yaml").write_text(installer(conf, "instance_config door /dev/video1 8082"))
    (conf / "hall.yaml").write_text("health:\n  http: 0.0.0.0:8083  # exposed, with a token\n")
    assert installer(conf, "next_free_port 8082").strip() == "8084"
    door = cfg.load(str(conf / "door.yaml"))  # every key known, every value accepted
    assert door["input"] == "/dev/video1" and door["health"]["http"] == "127.0.0.1:8082"
    assert door["classifier"]["engine_cache"] == "/var/lib/maskgate/engines"  # shared, built once
    assert "__" not in (conf / "door.yaml").read_text()


def instance_argv(name, conf_dir, state, run):
    """ExecStart of the template for instance ``name``, with the install paths moved to tmp."""
    line = settings("maskgate@.service")["ExecStart"][0].replace("%i", name)
    line = line.replace("/etc/maskgate", conf_dir).replace("/var/lib/maskgate", state)
    line = line.replace("/run/maskgate-", os.path.join(run, "maskgate-"))
    argv = shlex.split(line)
    assert argv[0] == PREFIX + "/.venv/bin/python"
    return [sys.executable] + argv[1:]


def health_of(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_two_instances_from_the_template_do_not_collide(tmp_path):
    """Two cameras at once on one machine, each from the template's ExecStart and the settings
    the installer writes: their own events, track-id state, health file and health port."""
    video = data_path("videos", "kaggle853_test_scenes.mp4")
    if not os.path.isfile(SHIPPED):
        pytest.skip("models/mask_classifier.onnx is absent")
    conf, state, run = (str(tmp_path / d) for d in ("etc", "state", "run"))
    os.makedirs(conf)
    ports = {}
    for name in ("door", "hall"):
        port = int(installer(conf, "next_free_port 18082").strip())
        ports[name] = port
        text = installer(conf, "instance_config %s %s %d" % (name, shlex.quote(video), port))
        with open(os.path.join(conf, name + ".yaml"), "w") as f:
            f.write(text.replace(PREFIX, ROOT).replace("/var/lib/maskgate", state))
    assert ports["door"] != ports["hall"]
    procs = {}
    # Test-speed settings only (the 2-core CI machine): Haar on small frames, onnxruntime.
    speed = ["--loop", "--detector", "haar", "--detector-size", "480", "--backend", "ort"]
    try:
        for name in ports:
            log = open(str(tmp_path / (name + ".log")), "wb")
            procs[name] = (subprocess.Popen(instance_argv(name, conf, state, run) + speed, cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT), log)
        health = dict((n, os.path.join(run, "maskgate-%s" % n, "health.json")) for n in ports)
        deadline = time.time() + 120
        while time.time() < deadline and not all((health_of(h).get("frames") or 0) >= 15 for h in health.values()):
            for name, (proc, _) in procs.items():
                assert proc.poll() is None, open(str(tmp_path / (name + ".log"))).read()
            time.sleep(0.2)
        docs = dict((n, health_of(h)) for n, h in health.items())
        assert all(d["frames"] >= 15 and d["status"] == "ok" for d in docs.values()), docs
        for name, port in ports.items():  # each endpoint is its own instance's
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as response:
                assert json.loads(response.read().decode())["pid"] == procs[name][0].pid
    finally:
        for proc, log in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = dict((n, p.wait(timeout=60)) for n, (p, _) in procs.items())
        for _, log in procs.values():
            log.close()
    assert codes == {"door": 0, "hall": 0}
    runs = {}
    for name in ports:
        folder = os.path.join(state, name)
        assert sorted(os.listdir(folder)) == ["events.jsonl", "events.state.json"]
        with open(os.path.join(folder, "events.jsonl")) as f:
            lines = [json.loads(line) for line in f]
        runs[name] = {l["run"] for l in lines}
        assert len(runs[name]) == 1 and len(lines) == health_of(health[name])["frames"]
    assert runs["door"] != runs["hall"]
    assert sorted(os.listdir(run)) == ["maskgate-door", "maskgate-hall"]


@pytest.mark.slow
def test_two_instances_on_one_health_port_fail_loudly_not_in_a_loop(tmp_path):
    """What the installer's port choice prevents: the second exits 2 (no restart) saying why."""
    if not os.path.isfile(SHIPPED):
        pytest.skip("models/mask_classifier.onnx is absent")
    conf, state, run = (str(tmp_path / d) for d in ("etc", "state", "run"))
    os.makedirs(conf)
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]  # held as the first instance would hold it
        text = installer(conf, "instance_config cam2 test:// %d" % port)
        with open(os.path.join(conf, "cam2.yaml"), "w") as f:
            f.write(text.replace(PREFIX, ROOT).replace("/var/lib/maskgate", state))
        proc = subprocess.run(instance_argv("cam2", conf, state, run) + ["--backend", "ort", "--detector", "haar"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = proc.stdout.decode()
    assert proc.returncode == 2, out  # RestartPreventExitStatus=2: failed, visible, not looping
    assert "health.http: cannot listen on 127.0.0.1:%d" % port in out
