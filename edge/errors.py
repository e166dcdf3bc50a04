"""The service's exception types, one per failing part.

Each carries a message that names the problem and, where possible, what to do
about it (a missing GStreamer element names the package that provides it).
"""


class SourceError(RuntimeError):
    """An input (camera, file, stream, image) cannot be opened or read."""


class SinkError(RuntimeError):
    """An output (display, video file, RTSP, HTTP) cannot be opened."""


class ConfigError(ValueError):
    """A configuration value or command-line option is invalid."""


class ModelError(RuntimeError):
    """A model file is missing, unreadable, or its metadata does not match."""


class MetadataError(ModelError, ValueError):
    """Model metadata is missing or does not describe a usable model."""


# What a command reports in one line instead of a traceback.
FAILURES = (ConfigError, SourceError, SinkError, ModelError)


def exit_status(exc):
    """A command's exit status for a failure: 2 for a bad setting (restarting cannot fix it), else 1."""
    return 2 if isinstance(exc, ConfigError) else 1
