"""Tenant-side clients of the appliances."""
