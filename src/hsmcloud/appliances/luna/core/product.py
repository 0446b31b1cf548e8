"""Fixed facts of the emulated product: a Luna Network HSM 7, model A790, as Azure delivers it."""

MODEL = "A790"
PRODUCT_NAME = "Luna Network HSM 7"
HSM_MODEL = "Luna K7"
FIRMWARE_VERSION = "7.0.3"
SOFTWARE_VERSION = "7.2"

#: Partitions this model supports.
MAX_PARTITIONS = 10
#: Consecutive wrong HSM SO passwords that zeroize the HSM (fixed on Luna 7).
SO_LOGIN_ATTEMPTS = 3

#: The only appliance shell account this emulation has.
ADMIN_USER = "admin"

HSM_LABEL_MAX_LENGTH = 32
PARTITION_NAME_MAX_LENGTH = 64
