"""HLS players as viewer sessions: an id of their own in the URLs, bytes counted, closed when quiet
or dropped by staff; refused when the control plane says no."""
from __future__ import annotations

import asyncio

import pytest

from media.hls.players import HlsPlayers, multivariant, with_ctx
from media.hub.viewers import PlayRefused, ViewerSessions


def test_the_entry_playlist_names_the_players_media_playlist_and_segments_carry_its_id():
    assert multivariant("room1", "abc123abc123").decode().splitlines() == [
        "#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-STREAM-INF:BANDWIDTH=2000000", "room1.m3u8?ctx=abc123abc123"]
    media = b"#EXTM3U\n#EXTINF:2.0,\nroom1/seg1.ts\n#EXTINF:2.0,\nroom1/seg2.ts\n"
    assert with_ctx(media, "abc123abc123").count(b".ts?ctx=abc123abc123\n") == 2


def test_a_player_is_one_session_counted_until_it_goes_quiet(monkeypatch):
    async def run():
        viewers, ended = ViewerSessions(), []
        viewers.ended = ended.append
        players = HlsPlayers(viewers, idle=10)
        ctx = players.new_ctx()
        assert await players.playlist("room1", ctx, "127.0.0.1:5000")
        assert await players.playlist("room1", ctx, "127.0.0.1:5001")  # a reload: the same player
        assert players.segment(ctx, 1000) and players.segment(ctx, 500)
        [session] = viewers.of_stream("room1")
        assert (session.id, session.protocol, session.sent()) == (ctx, "hls", 1500)
        clock = [1e9]
        monkeypatch.setattr("media.hls.players.time.monotonic", lambda: clock[0])
        players.sweep()
        assert viewers.of_stream("room1") == [] and ended == [session]

    asyncio.run(run())


def test_a_dropped_player_is_refused_and_a_refused_one_never_opens():
    async def run():
        viewers = ViewerSessions()
        players = HlsPlayers(viewers)
        ctx = players.new_ctx()
        await players.playlist("room1", ctx, "127.0.0.1:5000")
        assert viewers.drop(ctx)
        assert not await players.playlist("room1", ctx, "127.0.0.1:5000")
        assert not players.segment(ctx, 100)

        async def refuse(session):
            raise PlayRefused("hook_refused", "the on_play hook refused it: answered 403")

        viewers.authorize = refuse
        with pytest.raises(PlayRefused):
            await players.playlist("room1", players.new_ctx(), "127.0.0.1:5002")
        assert viewers.all() == [] and viewers.refused == {"hook_refused": 1}

    asyncio.run(run())


def test_a_player_back_after_going_quiet_or_on_another_room_is_a_new_session(monkeypatch):
    async def run():
        viewers, ended = ViewerSessions(), []
        viewers.ended = ended.append
        players = HlsPlayers(viewers, idle=10)
        clock = [100.0]
        monkeypatch.setattr("media.hls.players.time.monotonic", lambda: clock[0])
        ctx = players.new_ctx()
        await players.playlist("room1", ctx, "127.0.0.1:5000")
        [first] = viewers.of_stream("room1")
        clock[0] += 11  # quiet past idle, before the stats loop's sweep
        await players.playlist("room1", ctx, "127.0.0.1:5000")
        [second] = viewers.of_stream("room1")
        assert ended == [first] and second is not first
        await players.playlist("room2", ctx, "127.0.0.1:5000")  # the same id on another room
        assert ended == [first, second] and len(viewers.of_stream("room2")) == 1 and len(players) == 1

    asyncio.run(run())
