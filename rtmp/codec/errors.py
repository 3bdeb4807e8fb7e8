"""Error family of the RTMP codec: every failure is an RtmpProtocolError."""


class RtmpProtocolError(Exception):
    """Base class of all errors raised by the codec."""


class RemoteProtocolError(RtmpProtocolError):
    """The peer sent something we cannot accept (malformed or over a limit)."""


class LocalProtocolError(RtmpProtocolError):
    """Our own caller misused the codec (bad argument, wrong state)."""
