"""ViewerSessions keeps its sessions by stream as well as by id: every open and close keeps both."""
from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from media.hub.viewers import ViewerSessions

STREAMS = ("a", "b", "c")
steps = st.lists(st.tuples(st.booleans(), st.sampled_from(STREAMS), st.integers(0, 7)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_counts_and_lists_per_stream_match_the_open_sessions(plan):
    viewers = ViewerSessions()
    opened = []

    async def run() -> None:
        for opening, stream, pick in plan:
            if opening or not opened:
                opened.append(await viewers.open(stream, "rtmp", "127.0.0.1:1"))
            else:
                viewers.close(opened[pick % len(opened)])  # closing twice is a no-op
        for stream in STREAMS:
            expected = {s.id for s in viewers.all() if s.public_id == stream}
            assert {s.id for s in viewers.of_stream(stream)} == expected
            assert viewers.count(stream) == len(expected)

    asyncio.run(run())
