"""Reading HLS as a player does: the entry playlist (a multivariant with one variant, the player's
own `?ctx=` URL, while the stream is live) leads to the media playlist."""
from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urljoin


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def media_playlist_url(url: str) -> str | None:
    """The media playlist a player of `url` reads (`url` itself when it is one), None on an error."""
    status, body = get(url)
    if status != 200:
        return None
    text = body.decode()
    if "#EXT-X-STREAM-INF" not in text:
        return url
    return urljoin(url, [line for line in text.splitlines() if line and not line.startswith("#")][0])


def media_playlist(url: str) -> str:
    """The media playlist's text ("" on an error)."""
    found = media_playlist_url(url)
    if found is None:
        return ""
    status, body = get(found)
    return body.decode() if status == 200 else ""
