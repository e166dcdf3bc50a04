"""Measurement of the service's own code: accuracy (``evaluate``) and speed (``bench``)."""
