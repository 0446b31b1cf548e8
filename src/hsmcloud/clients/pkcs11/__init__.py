"""The hsmcloud PKCS#11 library (C, in native/) and where to find it once built."""
