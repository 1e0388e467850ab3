"""Every SQL statement Sluice runs lives in this package; nothing else builds queries."""
