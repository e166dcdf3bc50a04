"""Compare two models' class probabilities on the same batch: the numbers every check prints."""
import numpy as np


def compare(reference, candidate, tie=0.0):
    """Agreement of two (N, C) probability arrays.

    Returns a dict: ``n``, ``argmax_agree`` (fraction of rows with the same top class),
    ``mismatches`` (row indices that differ), ``decisive_mismatches`` (those where the
    reference's top-two margin is at least ``tie``: a near-tie flipped by rounding is
    expected at reduced precision, a confident decision flipped is not), ``max_diff``
    (largest absolute difference of any probability) and ``mean_diff``.
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError("outputs differ in shape: %s vs %s" % (reference.shape, candidate.shape))
    same = reference.argmax(1) == candidate.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.size else np.zeros((0, 2))
    margin = top2[:, 1] - top2[:, 0]
    diff = np.abs(reference - candidate)
    return {
        "n": int(len(reference)),
        "argmax_agree": float(same.mean()) if len(same) else 1.0,
        "mismatches": [int(i) for i in np.flatnonzero(~same)],
        "decisive_mismatches": [int(i) for i in np.flatnonzero(~same & (margin >= tie))],
        "max_diff": float(diff.max()) if diff.size else 0.0,
        "mean_diff": float(diff.mean()) if diff.size else 0.0,
    }


def describe(stats, what):
    """One line for the console: what was compared and how closely it agreed."""
    flips = len(stats["mismatches"])
    ties = flips - len(stats["decisive_mismatches"])
    return "%s: %d images, argmax agreement %.2f%% (%d differ%s), max |dprob| %.2e, mean %.2e" % (
        what, stats["n"], 100 * stats["argmax_agree"], flips,
        "" if not ties else ", all near-ties" if ties == flips else ", %d of them near-ties" % ties, stats["max_diff"], stats["mean_diff"])
