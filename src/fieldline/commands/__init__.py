"""Delivering commands to devices: at once when the device is online, else when it is back."""
