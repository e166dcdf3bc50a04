"""Face detectors behind one interface (``edge.infer.detect.create_detector`` builds them).

``base`` holds the interface, frame checks, scaling and non-maximum suppression;
``haar``, ``ssd`` and ``retinaface`` each implement ``Detector._detect``.
"""
