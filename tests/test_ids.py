"""IDS = |SAM ∩ CAM| / |SAM| on hand-made masks, paper and reference variants."""
import numpy as np
import pytest

from mmseg_epsam.functional.ids import ids_score, ids_select


def _mask(shape, *pixels):
    mask = np.zeros(shape, np.uint8)
    for r, c in pixels:
        mask[r, c] = 1
    return mask


def test_ids_hand_computed():
    cam = np.zeros((10, 10), np.uint8)
    cam[:, :5] = 1
    sam = np.zeros((10, 10), np.uint8)
    sam[0, :10] = 1  # 10 pixels, 5 inside the CAM mask
    assert ids_score(sam, cam) == pytest.approx(0.5)
    assert ids_score(sam, cam, 'reference') == pytest.approx(5 / 11)
    result = ids_select(sam, cam)
    assert (result.ids, result.kept, result.sam_area, result.cam_area) == (0.5, False, 10, 50)


def test_threshold_is_strict_in_paper_and_inclusive_in_reference():
    cam = np.ones((4, 5), np.uint8)
    cam[3, 4] = 0
    sam = np.ones((4, 5), np.uint8)  # 20 pixels, 19 inside: IDS 0.95
    assert ids_select(sam, cam, threshold=0.95).kept is False  # 0.95 > 0.95 is false
    assert ids_select(sam, cam, threshold=0.9).kept is True
    # reference: 19 / 21 = 0.9048 >= 0.9
    ref = ids_select(sam, cam, threshold=0.9, variant='reference')
    assert ref.ids == pytest.approx(19 / 21) and ref.kept is True
    exact = ids_select(sam, cam, threshold=19 / 21, variant='reference')
    assert exact.kept is True  # >= keeps the boundary


def test_variants_disagree_on_small_masks():
    sam = _mask((8, 8), (1, 1), (1, 2), (2, 2))
    cam = np.ones((8, 8), np.uint8)
    assert ids_select(sam, cam).kept is True  # 3/3 = 1.0 > 0.9
    assert ids_select(sam, cam, variant='reference').kept is False  # 3/4 = 0.75


def test_empty_sam_mask_is_rejected():
    empty = np.zeros((6, 6), np.uint8)
    cam = np.ones((6, 6), np.uint8)
    for variant in ('paper', 'reference'):
        result = ids_select(empty, cam, variant=variant)
        assert result.ids == 0.0 and result.kept is False and result.sam_area == 0
    assert ids_select(empty, cam, threshold=0.0).kept is False  # empty never kept (paper)


def test_empty_cam_mask_gives_zero():
    sam = _mask((5, 5), (2, 2))
    assert ids_select(sam, np.zeros((5, 5))).ids == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match='differs'):
        ids_score(np.ones((3, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match='2-D'):
        ids_score(np.ones((3, 3, 1)), np.ones((3, 3, 1)))
    with pytest.raises(ValueError, match='variant'):
        ids_score(np.ones((3, 3)), np.ones((3, 3)), 'other')
