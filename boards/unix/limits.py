# What the unix board can hold (blinds.config checks a configuration against
# it: `blinds config check --board unix`, and the hub at boot). No hardware
# imports here: the host tools load this file too.
LIMITS = {
    "name": "unix",
    # Sockets the hub may hold. A Linux host has plenty; this keeps the stream
    # budget comparable to an ESP32 build with lwIP's limit raised to 64.
    "max_sockets": 64,
    "max_clients": 15,
    "cache_size": 4096,
    "dns_log_size": 1024,
    "relay_log_size": 256,
    "relay_buffer_size": 16384,
    # A raw socket (root, or CAP_NET_RAW) for the WiFi cover's echo requests.
    "raw_sockets": True,
}
