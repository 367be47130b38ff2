"""The deploy rehearsal's own marker (registered here so pytest.ini stays as it is)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "rehearsal: the whole deploy rehearsal (minutes); runs only with RUN_REHEARSAL=1, "
                   "CI runs it as its own step (`make rehearse`)")
