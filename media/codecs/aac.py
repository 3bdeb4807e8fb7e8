"""AAC: the MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) that FLV, MP4 and RTP carry as codec setup."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MalformedData

# samplingFrequencyIndex 0..12; 13 and 14 are reserved, 15 means a 24-bit explicit rate follows.
RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_EXPLICIT_RATE = 15

# channelConfiguration -> channel count; 0 means "given by a program_config_element" (returned as 0).
_CHANNELS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
_CHANNEL_CONFIG = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 11, 8: 7, 24: 13}

# Object types whose specific config is a GASpecificConfig (the only kind config_build writes).
_GA_OBJECT_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})


@dataclass(frozen=True, slots=True)
class AacConfig:
    object_type: int
    sample_rate: int
    channels: int


def config_parse(asc: bytes) -> AacConfig:
    """Object type, sampling rate and channel count from the head of an AudioSpecificConfig.

    For SBR/PS (object types 5 and 29) the core rate is reported; the rest of the config is not read.
    """
    data = bytes(asc)
    value, left = int.from_bytes(data[:8], "big"), min(len(data), 8) * 8

    def read(n: int) -> int:
        nonlocal left
        if n > left:
            raise MalformedData(f"AudioSpecificConfig too short ({len(data)} bytes)")
        left -= n
        return (value >> left) & ((1 << n) - 1)

    object_type = read(5)
    if object_type == 31:
        object_type = 32 + read(6)
    if object_type == 0:
        raise MalformedData("AudioSpecificConfig has object type 0 (null)")
    index = read(4)
    if index == _EXPLICIT_RATE:
        sample_rate = read(24)
        if not sample_rate:
            raise MalformedData("AudioSpecificConfig has an explicit sampling rate of 0")
    elif index < len(RATES):
        sample_rate = RATES[index]
    else:
        raise MalformedData(f"reserved samplingFrequencyIndex {index}")
    channel_config = read(4)
    if channel_config not in _CHANNELS:
        raise MalformedData(f"reserved channelConfiguration {channel_config}")
    return AacConfig(object_type, sample_rate, _CHANNELS[channel_config])


def config_build(sample_rate: int, channels: int, object_type: int = 2) -> bytes:
    """An AudioSpecificConfig with a GASpecificConfig (1024-sample frames, no core coder, no extension).

    Rates outside ``RATES`` are written explicitly. Only general audio object types (e.g. 2, AAC LC)
    are supported: others need a different specific config.
    """
    if object_type not in _GA_OBJECT_TYPES:
        raise ValueError(f"object type {object_type} has no GASpecificConfig")
    if channels not in _CHANNEL_CONFIG:
        raise ValueError(f"no channelConfiguration for {channels} channels")
    if not 0 < sample_rate < 1 << 24:
        raise ValueError(f"sampling rate {sample_rate} not in 1..{(1 << 24) - 1}")
    value, size = object_type, 5
    if sample_rate in RATES:
        value, size = value << 4 | RATES.index(sample_rate), size + 4
    else:
        value, size = (value << 4 | _EXPLICIT_RATE) << 24 | sample_rate, size + 28
    value, size = value << 4 | _CHANNEL_CONFIG[channels], size + 4
    value, size = value << 3, size + 3  # frameLengthFlag, dependsOnCoreCoder, extensionFlag
    pad = -size % 8
    return (value << pad).to_bytes((size + pad) // 8, "big")
