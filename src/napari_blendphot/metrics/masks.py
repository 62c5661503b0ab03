"""Segmentation metrics: intersection over union of predicted and true masks (SPEC §7).

Predicted masks (probabilities in [0, 1] or 0/1) and true masks are both
binarised with ``value > threshold`` (0.5 by default, as in the paper).

Empty-union convention: when neither the prediction nor the truth has a single
pixel, the IoU is undefined and returned as NaN; :func:`mean_iou` ignores
NaN.  (Scoring such a galaxy 1 would reward a network for predicting nothing
on a galaxy that has no pixels; scoring it 0 would punish agreement.)
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.errors import InputError

__all__ = ["iou", "mean_iou"]

#: Blends processed at once, to bound the memory of the boolean temporaries.
_CHUNK = 256


def iou(pred_masks, true_masks, threshold: float = 0.5, source: str = "masks") -> np.ndarray:
    """IoU of each mask pair, vectorised over any leading axes.

    Parameters
    ----------
    pred_masks, true_masks : arrays of the same shape (..., H, W)
        E.g. (N, H, W) for one galaxy per blend or (N, 2, H, W) for both.
    threshold : float
        A pixel belongs to a mask when its value is ``> threshold``.

    Returns
    -------
    float64 array of the leading shape (``(N,)`` or ``(N, 2)``); NaN where
    both masks are empty.
    """
    pred_masks = np.asarray(pred_masks)
    true_masks = np.asarray(true_masks)
    if pred_masks.shape != true_masks.shape:
        raise InputError(source, f"predicted masks {pred_masks.shape} and true masks {true_masks.shape} differ")
    if pred_masks.ndim < 2:
        raise InputError(source, f"masks need at least 2 dimensions (H, W), got shape {pred_masks.shape}")
    lead = pred_masks.shape[:-2]
    pred_flat = pred_masks.reshape(-1, pred_masks.shape[-2] * pred_masks.shape[-1])
    true_flat = true_masks.reshape(pred_flat.shape)
    intersection = np.empty(len(pred_flat), np.int64)
    union = np.empty(len(pred_flat), np.int64)
    for start in range(0, len(pred_flat), _CHUNK):
        stop = start + _CHUNK
        pred_on = pred_flat[start:stop] > threshold
        true_on = true_flat[start:stop] > threshold
        intersection[start:stop] = np.count_nonzero(pred_on & true_on, axis=1)
        union[start:stop] = np.count_nonzero(pred_on | true_on, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    return values.reshape(lead)


def mean_iou(iou_values) -> float:
    """Mean of IoU values over every galaxy and blend, NaN (empty unions) ignored."""
    values = np.asarray(iou_values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")
