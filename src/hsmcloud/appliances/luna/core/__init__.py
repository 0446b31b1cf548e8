"""The protocol-neutral core of the Luna appliance: state, HSM, partitions, roles, policies, keystore."""
