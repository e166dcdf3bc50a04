"""Shared fixtures: the real data in ../shared/data (tests skip with a reason without it)."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("MASKGATE_DATA", os.path.join(ROOT, "..", "shared", "data"))


def data_path(*parts):
    """Path under the shared data folder, or skip the test saying what is missing."""
    path = os.path.join(DATA, *parts)
    if not os.path.exists(path):
        pytest.skip("shared data not found at %s (set MASKGATE_DATA to its folder)" % path)
    return path


@pytest.fixture(scope="session")
def shared_data():
    """The shared data folder (fmd/, kaggle853/, videos/)."""
    return data_path()
