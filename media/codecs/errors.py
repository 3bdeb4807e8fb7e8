"""Errors of the shared codec helpers: bytes that do not parse as the codec says they should."""


class CodecError(ValueError):
    """Base of every error raised by ``media.codecs``."""


class MalformedData(CodecError):
    """A payload, configuration record or bitstream is truncated or inconsistent."""
