"""Alert rules evaluated against the fleet, and the alerts they raise (SPEC §6)."""
