"""The PKCS#11 layer of the Luna appliance: objects, mechanisms, sessions and the C_* semantics."""
