"""meddx.train: training (classifiers in `fit`, U-Net segmenters in `segmentation`).

The package is also callable: `meddx.train(data, ...)` is `meddx.app.api.train` (see `meddx/__init__.py`).
"""
