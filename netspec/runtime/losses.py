"""Runtime: classification losses and weight penalties, each returning (value, gradient)."""

import numpy as np


def softmax_loss(scores: np.ndarray, y: np.ndarray):
    """Softmax cross-entropy, mean over the batch (torch.nn.functional.cross_entropy).

    scores: (N, C) unnormalized; y: (N,) integer labels in [0, C) -> loss (float), dscores (N, C).
    The row maximum is subtracted before exponentiating; at initialization loss ~ log C.
    Per-token (language models): scores (N, T, C) and y (N, T) -> the mean over all N T
    tokens, as cross_entropy on the flattened tokens.
    """
    if scores.ndim == 3:
        loss, d2 = softmax_loss(scores.reshape(-1, scores.shape[-1]), np.asarray(y).reshape(-1))
        return loss, d2.reshape(scores.shape)
    n = scores.shape[0]
    rows = np.arange(n)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].sum() / n
    dscores = np.exp(log_probs)
    dscores[rows, y] -= 1
    dscores /= n
    return float(loss), dscores


def svm_loss(scores: np.ndarray, y: np.ndarray, delta: float = 1.0, squared: bool = False):
    """Multiclass hinge loss (Weston-Watkins, the CS231n SVM), mean over the batch.

    loss = 1/N sum_n sum_{j != y_n} max(0, s_j - s_{y_n} + delta)   (squared hinge: the term ^2).
    scores: (N, C); y: (N,) -> loss (float), dscores (N, C).
    torch.nn.functional.multi_margin_loss(p=1 or 2, margin=delta) also divides each sample's sum
    by C: this loss is C times torch's.
    """
    n = scores.shape[0]
    rows = np.arange(n)
    margins = np.maximum(scores - scores[rows, y][:, None] + delta, 0)
    margins[rows, y] = 0
    if squared:
        loss = (margins * margins).sum() / n
        dscores = 2 * margins
    else:
        loss = margins.sum() / n
        dscores = (margins > 0).astype(scores.dtype)
    dscores[rows, y] -= dscores.sum(axis=1)
    dscores /= n
    return float(loss), dscores


def l1_penalty(w: np.ndarray, lam: float):
    """lam * sum|w| -> value (float), dw = lam * sign(w) (0 at 0)."""
    return float(lam * np.abs(w).sum()), lam * np.sign(w)


def l2_penalty(w: np.ndarray, lam: float):
    """0.5 * lam * sum w^2 -> value (float), dw = lam * w (torch's weight_decay=lam)."""
    return float(0.5 * lam * (w * w).sum()), lam * w


def elastic_penalty(w: np.ndarray, l1: float, l2: float):
    """Elastic net: l1 * sum|w| + 0.5 * l2 * sum w^2 -> value (float), dw."""
    v1, dw1 = l1_penalty(w, l1)
    v2, dw2 = l2_penalty(w, l2)
    return v1 + v2, dw1 + dw2
