"""Shared test configuration: a fast hypothesis profile and the thread-count guard."""

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# tests/ on the path so test modules can `import helpers`.
sys.path.insert(0, os.path.dirname(__file__))

# Every helper joins in whatever else runs on the machine, so that the tests that
# compare thread counts compare parallel runs (the pool's look at the load is
# tested in rust/pyfuncnet-kernels/tests/par_crowded.rs).
os.environ["PYFUNCNET_WATCH_LOAD"] = "0"

settings.register_profile(
    "pyfuncnet",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("PYFUNCNET_HYPOTHESIS_PROFILE", "pyfuncnet"))


@pytest.fixture
def restore_threads():
    """Restores the thread count a test changes."""
    from pyfuncnet import config

    n = config.get_num_threads()
    yield n
    config.set_num_threads(n)
