"""Recording live streams to crash-safe fragmented MP4 files (see writer.py and from_hub.py)."""
