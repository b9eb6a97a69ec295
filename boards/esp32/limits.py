# What a stock ESP32 MicroPython build can hold (blinds.config checks a
# configuration against it: `blinds config check --board esp32`, and the hub at
# boot). No hardware imports here: the host tools load this file too.
LIMITS = {
    "name": "esp32",
    # CONFIG_LWIP_MAX_SOCKETS of stock firmware; a custom board definition can
    # raise it (docs/sockets.md).
    "max_sockets": 10,
    # AP clients: 10 on IDF 4.x (15 on IDF 5.x for ESP32/S3; 10 is safe).
    "max_clients": 10,
    # ~150 bytes an entry on the host, less on a 32-bit port: 256 ~ 25 KB.
    "cache_size": 256,
    "dns_log_size": 64,
    "relay_log_size": 32,
    "relay_buffer_size": 8192,
    # lwIP raw sockets (socket.SOCK_RAW in the v1.29 stubs): the WiFi cover's echo requests.
    "raw_sockets": True,
}
