"""`make bench`: MicroVibe's media plane against nginx-rtmp on the same machine and the same work.

See docs/benchmarks.md for what is measured and how; `python -m bench --help` for the flags.
"""
