"""Small helpers that several parts of the device code share (standard library only, Python 3.6).

Each lives here, once, so that a part needing a file hash or a token check does not import
another part that happens to own one.
"""
import hashlib
import hmac
import ipaddress
import os
import re
import tempfile

from edge.errors import ConfigError

# The folder that holds the edge package: the repository, or /opt/maskgate on a device.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Still images that sources, data readers and checks accept (OpenCV decodes all of them).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def resolve_path(path):
    """A relative path as given when it exists from the CWD, else next to the edge package."""
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    beside = os.path.join(PACKAGE_ROOT, path)
    return beside if os.path.exists(beside) else path


def merge_options(options, defaults, what):
    """``defaults`` updated with ``options``; an unknown option is a ConfigError naming it."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError("unknown {} option(s) {}; accepted: {}".format(
            what, ", ".join(unknown), ", ".join(sorted(defaults))))
    merged = dict(defaults)
    merged.update(options)
    return merged


def sha256(path):
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path, data, mode=0o644):
    """Write ``data`` (bytes or str) to ``path`` through a temporary file and a rename.

    Readers see the old file or the new one, never half of one, and a crash or a full
    disk leaves the old file in place (the temporary file is removed).
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def redact(uri):
    """The URI without its password, for logs (rtsp://user:secret@host -> user:***@host)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


def is_loopback(host):
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost).

    A host name other than localhost may resolve to anything: it counts as exposed.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def offered_token(headers, query):
    """The token a request offers: ``Authorization: Bearer T`` wins over ``?token=T``."""
    offered = (query.get("token") or [""])[-1]
    auth = headers.get("Authorization", "") or ""
    if auth.startswith("Bearer "):
        offered = auth[len("Bearer "):].strip()
    return offered


def token_ok(token, headers, query):
    """True when no token is required, or the request carries it (constant-time compare)."""
    if not token:
        return True
    return hmac.compare_digest(offered_token(headers, query).encode("utf-8"), token.encode("utf-8"))
