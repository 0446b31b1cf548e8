"""NTLS: the appliance's mutually authenticated TLS listener for applications (TCP 1792)."""
