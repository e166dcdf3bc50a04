"""Fine-tuning of the product's face detector (RetinaFace-MobileNet0.25) on masked crowds.

``python -m train.detector --data ../shared/data/kaggle853 --out runs/det`` trains (``make
train-detector``: the shipped recipe), ``python -m train.detector.export runs/det/best.pt --out
FILE.onnx`` writes the ONNX file that ``edge/infer/detectors/retinaface.py`` runs, and
``python -m train.detector.calibrate FILE.onnx --data DIR`` chooses its operating point on val.
docs/detector-card.md records the recipe, its data and what was measured.
"""
