"""LunaSH, the appliance shell, over SSH: an adapter over the core."""
