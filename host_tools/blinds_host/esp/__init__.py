"""ESP32 host tools: firmware images, partition tables, flashing, Improv provisioning."""
