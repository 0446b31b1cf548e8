"""Fixtures for the Luna appliance tests."""

from __future__ import annotations

import pytest

from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
from luna_helpers import SERIAL


@pytest.fixture
def core(tmp_path):
    """The core (state and services) of a brand-new appliance."""
    opened = ApplianceCore.open(tmp_path / "appliance", SERIAL)
    yield opened
    opened.close()


@pytest.fixture
def state(core):
    """The persistent state of the brand-new appliance of ``core``."""
    return core.state
