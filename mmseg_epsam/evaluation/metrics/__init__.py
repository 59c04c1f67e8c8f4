"""metrics."""
from .epsam_metric import EPSAMMetric  # noqa: F401
from .image_label_metric import ImageLabelMetric  # noqa: F401
