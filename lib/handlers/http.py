"""``http``: webhook delivery (filled in by the HTTP API work)."""
