"""Fine-tuning of the product's face detector (RetinaFace-MobileNet0.25) on masked crowds.

``python -m train.detector --data ../shared/data/kaggle853 --out runs/det`` trains,
``python -m train.detector.export runs/det/best.pt`` writes an ONNX file that
``edge/infer/detectors/retinaface.py`` runs unchanged. RESULTS.md records what was measured.
"""
