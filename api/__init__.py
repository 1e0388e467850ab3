"""Sluice's HTTP API (Flask). ``api.index:app`` is the WSGI app; see api/index.py."""
