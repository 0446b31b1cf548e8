"""Fixtures for the Luna appliance tests."""

from __future__ import annotations

import pytest

from hsmcloud.appliances.luna.core.state import ApplianceState
from luna_helpers import SERIAL


@pytest.fixture
def state(tmp_path):
    """The persistent state of a brand-new appliance."""
    opened = ApplianceState.open(tmp_path / "appliance", SERIAL)
    yield opened
    opened.close()
