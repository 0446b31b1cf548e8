"""Fixtures and settings for the payShield appliance tests."""

from __future__ import annotations


def pytest_configure(config):
    # psec drives two-key TDES through cryptography's deprecated path; the noise is not ours.
    config.addinivalue_line("filterwarnings", "ignore:.*TripleDES.*")
