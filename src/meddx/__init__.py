"""meddx: medical image diagnosis with Keras 3 (TensorFlow backend).

Pipeline, one sub-package per stage: io -> data -> transforms -> models -> train
-> evaluate -> explain -> report. Import-time stays cheap: TensorFlow is imported
only inside the functions that need it.
"""

__version__ = "0.1.0"
