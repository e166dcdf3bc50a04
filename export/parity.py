"""Compare two models' class probabilities on the same batch: the numbers every check prints."""
import numpy as np


def compare(reference, candidate):
    """Agreement of two (N, C) probability arrays.

    Returns a dict: ``n``, ``argmax_agree`` (fraction of rows with the same top class),
    ``mismatches`` (row indices that differ), ``max_diff`` (largest absolute difference
    of any probability) and ``mean_diff``.
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError("outputs differ in shape: %s vs %s" % (reference.shape, candidate.shape))
    same = reference.argmax(1) == candidate.argmax(1)
    diff = np.abs(reference - candidate)
    return {
        "n": int(len(reference)),
        "argmax_agree": float(same.mean()) if len(same) else 1.0,
        "mismatches": [int(i) for i in np.flatnonzero(~same)],
        "max_diff": float(diff.max()) if diff.size else 0.0,
        "mean_diff": float(diff.mean()) if diff.size else 0.0,
    }


def describe(stats, what):
    """One line for the console: what was compared and how closely it agreed."""
    return "%s: %d images, argmax agreement %.2f%% (%d differ), max |dprob| %.2e, mean %.2e" % (
        what, stats["n"], 100 * stats["argmax_agree"], len(stats["mismatches"]),
        stats["max_diff"], stats["mean_diff"])
