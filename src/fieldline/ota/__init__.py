"""Signed firmware and staged rollouts (issue 17, docs/ota.md)."""
