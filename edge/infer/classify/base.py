"""The classifier interface: a float32 NCHW batch of face crops -> class probabilities.

A ``Classifier`` has ``.meta`` (the model's metadata), ``.classes`` (output order),
``.max_batch``, ``.backend`` ("trt" or "ort"), ``.predict(batch) -> (N, C) float32`` (run in
chunks of ``max_batch``) and ``.close()``. ``edge.infer.classify.loader.load_classifier``
opens one of the two backends (``ort``, ``trt``).
"""
import numpy as np

from edge.errors import ModelError

# The largest batch per call, and the batch engines are built for: all faces of a busy
# frame in one call. The one default of the service, the engine cache and export.trt.
DEFAULT_MAX_BATCH = 16


class Classifier(object):
    """The interface both backends implement: ``_run`` one chunk, the rest is shared here.

    Subclasses set ``backend``, ``meta``, ``classes``, ``max_batch`` and ``input_shape``
    ((3, H, W)) and implement ``_run(chunk) -> (n, C)`` for a chunk of at most max_batch.
    """

    backend = None

    def predict(self, batch):
        """Class probabilities (N, C) float32 for a float32 NCHW batch, in chunks of ``max_batch``."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(self.input_shape):
            raise ValueError("batch shape %s: this model takes (N,) + %s" % (batch.shape, tuple(self.input_shape)))
        out = np.empty((len(batch), len(self.classes)), np.float32)
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start:start + self.max_batch]
            probs = self._run(chunk)
            if probs.shape != (len(chunk), len(self.classes)):
                raise ModelError("%s returned %s for a batch of %d" % (self, probs.shape, len(chunk)))
            out[start:start + len(chunk)] = probs
        return out

    def _run(self, chunk):
        raise NotImplementedError

    def close(self):
        """Release the model; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
