"""The on-device service: camera in, every face classified, overlay and events out.

Everything under edge/ runs on JetPack 4.6 (Python 3.6) and imports only numpy, OpenCV,
PyYAML, PyGObject and, lazily, its inference runtime. It never imports train/ or export/.

Four rooms, each importing only the ones below it:

- ``app/``: the appliance: configuration, the one assembly of a run, the loop, the service,
  still photos, events, overlay, health, systemd notify, detector provisioning;
- ``measure/``: accuracy (``python -m edge.evaluate``) and speed (``edge-bench``);
- ``infer/``: one frame in, faces out: detectors, classifiers (onnxruntime, TensorRT and its
  engines), preprocessing, the tracker; no configuration, no GStreamer;
- ``io/``: cameras, files and streams in, displays, files and streams out (GStreamer);

and two helpers: ``common`` (shared small functions) and ``errors``. The top-level
``evaluate``, ``health`` and ``provision`` modules are the ``python -m edge.X`` commands.
"""
