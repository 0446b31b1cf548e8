"""The seven dedicatedHSMs SKUs and what each one allocates."""
from __future__ import annotations

from dataclasses import dataclass

LUNA_A790 = "SafeNet Luna Network HSM A790"


@dataclass(frozen=True, kw_only=True)
class Sku:
    name: str
    device_kind: str  # luna | payshield
    lmk_count: int = 0
    calls_per_second: int = 0

    @property
    def is_payment(self) -> bool:
        return self.device_kind == "payshield"


SKUS: dict[str, Sku] = {LUNA_A790: Sku(name=LUNA_A790, device_kind="luna")}
for _lmk in (1, 2):
    for _cps in (60, 250, 2500):
        _name = f"payShield10K_LMK{_lmk}_CPS{_cps}"
        SKUS[_name] = Sku(name=_name, device_kind="payshield", lmk_count=_lmk, calls_per_second=_cps)

# 2018-10-31-preview only knew the Luna appliance.
SKUS_BY_API_VERSION = {"2018-10-31-preview": (LUNA_A790,)}


def lookup(name: str, api_version: str) -> Sku | None:
    allowed = SKUS_BY_API_VERSION.get(api_version)
    if allowed is not None and name not in allowed:
        return None
    return SKUS.get(name)
