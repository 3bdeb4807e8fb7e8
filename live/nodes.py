"""The media nodes of a deployment, kept in the shared cache (Redis in production).

- Heartbeat: each node's stats report (`media/stats.node_stat`, with its public `urls` and load
  `totals`) is stored under `live:stat:node:{id}` with a TTL a little under `NODE_TIMEOUT`,
  renewed every second; a node whose key lapsed is lost.
- Claims: a live room is owned by one node cluster-wide: `live:claim:{room}` holds the node id,
  taken with SET NX EX (`cache.add`) when a publish is authorized, renewed by the owner's
  heartbeat, released when the publish ends; a dead node's claims expire with it.
- Allocation: a room that is not live is given a node when its push URL is asked for or a WHIP
  publish reaches the web host: the node `ALLOCATE_URL` names (GET with room, owner and kind,
  answering `{"node": ID}`), else the least loaded live node.
- Sweep: every node (and the Celery beat) ends the live sessions of lost nodes with reason
  "node_lost" and drops them from the list of nodes.

No cluster protocol of our own: the cache's atomic SET NX EX and TTLs are the whole mechanism.
What it does not do: move a live stream (its publisher reconnects and lands on a live node).
"""
from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request

from django.conf import settings
from django.core.cache import cache

from . import selectors

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0  # s: media nodes report (and sweep) this often


def heartbeat_ttl() -> int:
    # A lapsed key is seen by the next sweep (within HEARTBEAT_EVERY), so a lost node's sessions
    # end within NODE_TIMEOUT of its last report.
    return max(2, int(settings.NODE_TIMEOUT - HEARTBEAT_EVERY))


def claim_key(public_id: str) -> str:
    return f"live:claim:{public_id}"


def claim(public_id: str, node: str) -> str:
    """Take the room for `node` unless another node holds it; returns the holder's id."""
    key = claim_key(public_id)
    for _ in range(2):  # a second try when the claim expired between the add and the get
        if cache.add(key, node, settings.NODE_TIMEOUT):
            return node
        if (held := cache.get(key)) is not None:
            return str(held)
    return node if cache.add(key, node, settings.NODE_TIMEOUT) else str(cache.get(key))


def claims_renew(public_ids: list[str], node: str) -> None:
    """Extend the claims `node` holds (one read and one touch per live room per heartbeat)."""
    held = cache.get_many([claim_key(p) for p in public_ids])
    for public_id in public_ids:
        key = claim_key(public_id)
        if key not in held:
            cache.add(key, node, settings.NODE_TIMEOUT)  # lapsed (a Redis hiccup): take it back
        elif held[key] == node:
            cache.touch(key, settings.NODE_TIMEOUT)


def release(public_id: str, node: str) -> None:
    if cache.get(claim_key(public_id)) == node:
        cache.delete(claim_key(public_id))


def holder(public_id: str) -> str | None:
    return cache.get(claim_key(public_id))


def nodes_live() -> dict[str, dict]:
    """Each node with a fresh heartbeat: id -> its report."""
    known = cache.get(selectors.NODE_STAT_NODES) or {}
    found = cache.get_many([selectors.node_stat_key(node) for node in known])
    return {node: found[selectors.node_stat_key(node)] for node in sorted(known)
            if selectors.node_stat_key(node) in found}


def heartbeat(stat: dict) -> None:
    """Store a node's report as its heartbeat and renew the claims of the rooms it serves."""
    node = stat["node"]
    cache.set(selectors.node_stat_key(node), stat, heartbeat_ttl())
    known = cache.get(selectors.NODE_STAT_NODES) or {}
    if node not in known:  # the list of nodes changes rarely: written only when it does
        cache.set(selectors.NODE_STAT_NODES, {**known, node: True}, None)
    claims_renew([s["room_id"] for s in stat.get("streams", [])], node)


def node_urls(node: str | None) -> dict | None:
    """The public bases of a live node (`rtmp`, `rtmp_play`, `flv`, `hls`, `whip`, `whep`, `ws`)."""
    if node is None:
        return None
    report = cache.get(selectors.node_stat_key(node))
    return report.get("urls") if report else None


def _load(report: dict) -> tuple:
    totals = report.get("totals", {})
    return (totals.get("transcodes", 0), totals.get("streams", 0), totals.get("viewers", 0),
            totals.get("bitrate_in", 0))


def least_loaded(nodes: dict[str, dict]) -> str | None:
    """Fewest transcodes, then streams, viewers and input bitrate; ties by node id."""
    return min(nodes, key=lambda node: (_load(nodes[node]), node)) if nodes else None


def allocate(*, public_id: str, owner: str, kind: str) -> str | None:
    """The node a room's next publish should go to: the holder while live, else the allocation
    callback's choice (when it names a live node), else the least loaded live node."""
    if (held := holder(public_id)) is not None and node_urls(held) is not None:
        return held
    nodes = nodes_live()
    if settings.ALLOCATE_URL and nodes:
        chosen = _allocate_ask(public_id, owner, kind)
        if chosen in nodes:
            return chosen
        log.warning("allocation: %s named %r for room %s, not a live node; using the least loaded",
                    settings.ALLOCATE_URL, chosen, public_id)
    return least_loaded(nodes)


def _allocate_ask(public_id: str, owner: str, kind: str) -> str | None:
    query = urllib.parse.urlencode({"room": public_id, "owner": owner, "kind": kind})
    url = f"{settings.ALLOCATE_URL}{'&' if '?' in settings.ALLOCATE_URL else '?'}{query}"
    try:
        with urllib.request.urlopen(url, timeout=settings.HOOK_TIMEOUT) as response:
            answer = json.loads(response.read(64 * 1024))
        return str(answer["node"]) if isinstance(answer, dict) and answer.get("node") else None
    except Exception as exc:  # a broken allocator must not stop publishing
        log.warning("allocation: %s failed for room %s: %s", settings.ALLOCATE_URL, public_id, exc)
        return None


def nodes_sweep(*, alive: str | None = None) -> list[str]:
    """End the live sessions of nodes whose heartbeat lapsed (reason "node_lost"); `alive` is the
    calling node, never lost to itself. Each lost node is swept once (a cache lock)."""
    from .services import sessions_close_lost

    known = cache.get(selectors.NODE_STAT_NODES) or {}
    present = cache.get_many([selectors.node_stat_key(node) for node in known])
    lost = [node for node in known if node != alive and selectors.node_stat_key(node) not in present]
    swept = []
    for node in lost:
        if not cache.add(f"live:sweep:{node}", alive or "beat", settings.NODE_TIMEOUT):
            continue  # another node is sweeping it
        for public_id in sessions_close_lost(node=node):
            release(public_id, node)
        known = cache.get(selectors.NODE_STAT_NODES) or {}
        known.pop(node, None)
        cache.set(selectors.NODE_STAT_NODES, known, None)
        swept.append(node)
    return swept
