"""Emulated payShield 10K payment HSM: host ports HOST1/HOST2, management REST API.

Entry point: :class:`hsmcloud.appliances.payshield.appliance.PayShieldAppliance`.
"""
