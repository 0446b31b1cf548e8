"""Emulated Luna Network HSM 7 (model A790) appliance: LunaSH over SSH, provider management API.

Entry point: :class:`hsmcloud.appliances.luna.appliance.LunaAppliance`.
"""
