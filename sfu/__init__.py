"""WebRTC SFU: WHIP/WHEP and room-socket signaling, encoded-media fan-out on aiortc (see rooms.py)."""
