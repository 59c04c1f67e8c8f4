"""Random rotation by a multiple of 90 degrees (lossless, for square histology patches)."""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RandomRot90(BaseTransform):
    """Rotate the image (and every map in ``seg_fields``) by ``k * 90`` degrees.

    ``k`` is drawn uniformly from {0, 1, 2, 3} with ``np.random`` and stored in
    ``results['rot90_k']``. Together with horizontal and vertical flips this covers all eight
    symmetries of a square patch, without the interpolation and padded corners of an
    arbitrary-angle rotation (which the EVP would pick up as strong edges).
    """

    def transform(self, results: dict) -> dict:
        """Rotate ``img`` and the ``seg_fields`` maps counter-clockwise by ``k * 90``."""
        k = int(np.random.randint(0, 4))
        if k:
            results['img'] = np.ascontiguousarray(np.rot90(results['img'], k))
            for key in results.get('seg_fields', []):
                results[key] = np.ascontiguousarray(np.rot90(results[key], k))
        results['img_shape'] = results['img'].shape[:2]
        results['rot90_k'] = k
        return results
