"""Bridges: per-stream converters (hub readers) for codecs a target protocol cannot carry as they are."""
