"""Peer prompt compressors, each run in its own environment and driven over a pipe."""
