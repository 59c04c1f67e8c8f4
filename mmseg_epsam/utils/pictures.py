"""Side-by-side pictures: image | CAM heat map | masks (initial, SAM, ground truth)."""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

TUMOUR_BGR = np.array([0, 0, 255], np.uint8)  # the tumour palette colour (red)


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """Write ``title`` in the top-left corner of a BGR panel (in place) and return it."""
    scale = max(panel.shape[0] / 512.0, 0.3)
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(panel, title, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.7 * scale, colour, max(1, int(thickness * scale)), cv2.LINE_AA)
    return panel


def heat_overlay(image_bgr: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A [0, 1] CAM as a JET heat map blended 50/50 over the image (resized to fit)."""
    if cam.shape[:2] != image_bgr.shape[:2]:
        cam = cv2.resize(cam.astype(np.float32), image_bgr.shape[1::-1],
                         interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.round(np.clip(cam, 0, 1) * 255).astype(np.uint8),
                             cv2.COLORMAP_JET)
    return cv2.addWeighted(image_bgr, 0.5, heat, 0.5, 0)


def mask_panel(mask: Optional[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """A 0/1 mask in red on black; a missing mask is a grey panel."""
    if mask is None:
        return np.full((*shape, 3), 96, np.uint8)
    return np.where(mask[..., None] > 0, TUMOUR_BGR, np.zeros(3, np.uint8)).astype(np.uint8)


def render_panels(image_bgr: np.ndarray, cam: Optional[np.ndarray],
                  masks: Sequence[Tuple[str, Optional[np.ndarray]]],
                  cam_title: str = 'CAM') -> np.ndarray:
    """``image | CAM over image | mask | mask ...`` as one BGR picture.

    Args:
        image_bgr: the patch, HxWx3 uint8 BGR.
        cam: a CAM in [0, 1] (any size; resized to the patch), or None to leave it out.
        masks: ``(title, mask)`` pairs; a None mask is drawn grey and titled "no <title>".
        cam_title: title of the CAM panel (e.g. with the classifier score).
    """
    shape = image_bgr.shape[:2]
    panels = [titled(image_bgr.copy(), 'image')]
    if cam is not None:
        panels.append(titled(heat_overlay(image_bgr, cam), cam_title))
    for title, mask in masks:
        panels.append(titled(mask_panel(mask, shape), title if mask is not None
                             else f'no {title}'))
    return np.concatenate(panels, axis=1)
