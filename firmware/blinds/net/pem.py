# PEM to DER: mbedTLS on MicroPython takes keys and certificates as DER
# data (its PEM key parser refuses what openssl writes).
import binascii


def der(data):
    # The first PEM block of data (certificate or key) as DER; data already
    # DER is returned as it is.
    b = data.find(b"-----BEGIN ")
    if b < 0:
        return bytes(data)
    b = data.find(b"-----", b + 11)
    e = data.find(b"-----END ", b + 5)
    if b < 0 or e < 0:
        raise ValueError("truncated PEM")
    return binascii.a2b_base64(data[b + 5:e].replace(b"\r", b"").replace(b"\n", b""))
