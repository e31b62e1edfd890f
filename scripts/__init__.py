"""Setup helpers called by the Makefile."""
