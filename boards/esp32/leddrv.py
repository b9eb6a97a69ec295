# The board's LED, driven for blinds.led's Indicator: a plain LED on a GPIO
# (lit for any colour but black) or one NeoPixel (WS2812, shows the colour).
# Which and where: hub.led in the configuration, else the board's default:
# the RGB NeoPixel on GPIO48 of ESP32-S3 devkits (ESP32-S3-DevKitC-1 v1.0; v1.1
# moved it to GPIO38: set "neopixel:38"), the LED on GPIO2 of ESP32 devkits.
import sys

import machine
from blinds import led

S3_DEFAULT = ("neopixel", 48)
ESP32_DEFAULT = ("gpio", 2)


class PinLed:
    def __init__(self, pin, active_low=False):
        self.pin = machine.Pin(pin, machine.Pin.OUT)
        self.lit = 0 if active_low else 1

    def show(self, colour):
        self.pin.value(self.lit if colour != led.OFF else 1 - self.lit)


class PixelLed:
    def __init__(self, pin):
        import neopixel

        self.np = neopixel.NeoPixel(machine.Pin(pin, machine.Pin.OUT), 1)

    def show(self, colour):
        self.np[0] = colour
        self.np.write()


def default_led(machine_name):
    """(kind, pin) of the board's own LED, from sys.implementation._machine
    ("Generic ESP32S3 module with Octal-SPIRAM with ESP32S3", ...)."""
    return S3_DEFAULT if "ESP32S3" in machine_name.upper().replace("-", "") else ESP32_DEFAULT


def make(spec, machine_name=None):
    """The driver for ``spec`` (hub.led, see blinds.led.parse); None for "none"."""
    kind, pin = led.parse(spec)
    if kind == "none":
        return None
    if kind == "default":
        kind, pin = default_led(machine_name or sys.implementation._machine)
    if kind == "neopixel":
        return PixelLed(pin)
    return PinLed(pin, active_low=kind == "gpio_low")
