"""Inference attacks: what the server, or anyone holding the released model, learns about one user's data.

* :mod:`.interaction` -- which items a client interacted with, from what the
  server sees of it in one round, under every protection mode.
"""
