"""fleetwarden: keep the OS, firmware and configuration of Linux fleets current, safe and provable."""

__version__ = "0.1.0"
