"""One frame in, faces out: detectors, classifiers, preprocessing, the tracker.

No configuration and no GStreamer here: the app assembles these from its settings.
"""
