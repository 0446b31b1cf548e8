"""hsmcloud: a dedicated-HSM cloud service with emulated appliances."""
__version__ = "0.1.0"
