"""Synthesized mask wearing: real mask textures worn correctly and incorrectly on bare faces.

Real incorrectly-worn masks are few (kaggle853 has 123, bijoy_webcam shows one person),
so this package makes them: masks cut from masked faces of the training scenes are placed
on bare faces by the five RetinaFace landmarks, over the nose (``mask``), under the nose
(``incorrect_nose``) or on the chin (``incorrect_chin``), all three made the same way so
that only where the mask sits tells them apart.

Modules: ``landmarks`` (RetinaFace's five points), ``frame`` (the canonical face frame),
``texture`` (cutting masks), ``placement`` (wearing them), ``sources`` (train-split faces
and licences), ``synth`` (one face), ``sheet`` (contact sheets); ``python -m
train.maskwear --help`` generates a data set.
"""
