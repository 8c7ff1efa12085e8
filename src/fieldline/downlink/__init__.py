"""Platform → device: desired configuration and commands (OTA notifications will join them)."""
