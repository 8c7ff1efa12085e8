"""fieldline: a self-hosted IoT telemetry platform."""

__version__ = "0.1.0"
