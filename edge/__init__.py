"""The on-device service: camera in, every face classified, overlay and events out.

Everything under edge/ runs on JetPack 4.6 (Python 3.6) and imports only numpy, OpenCV,
PyYAML, PyGObject and, lazily, its inference runtime. It never imports train/ or torch.
"""
