"""Offline datasets and generators (see the submodules)."""
