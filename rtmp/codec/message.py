"""RTMP message layer: type constants, chunk stream ids and application events."""

from __future__ import annotations

from dataclasses import dataclass, field

# Message type ids.
SET_CHUNK_SIZE = 1
ABORT = 2
ACK = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# User control event types.
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

# Chunk stream ids the server writes on (nginx-rtmp's choice).
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_DATA = 5
CSID_AUDIO = 6
CSID_VIDEO = 7

# Set Peer Bandwidth limit types.
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2


@dataclass(frozen=True, slots=True)
class Connect:
    transaction_id: float
    app: str
    tc_url: str
    properties: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReleaseStream:
    transaction_id: float
    name: str


@dataclass(frozen=True, slots=True)
class FCPublish:
    transaction_id: float
    name: str


@dataclass(frozen=True, slots=True)
class FCUnpublish:
    transaction_id: float
    name: str


@dataclass(frozen=True, slots=True)
class CreateStream:
    transaction_id: float


@dataclass(frozen=True, slots=True)
class Publish:
    transaction_id: float
    stream_id: int
    name: str
    publish_type: str = "live"


@dataclass(frozen=True, slots=True)
class Play:
    transaction_id: float
    stream_id: int
    name: str
    start: float = -2.0


@dataclass(frozen=True, slots=True)
class DeleteStream:
    transaction_id: float
    stream_id_to_delete: int


@dataclass(frozen=True, slots=True)
class CloseStream:
    stream_id: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """onMetaData; payload is AMF0 `"onMetaData", values` ready to forward."""

    stream_id: int
    timestamp: int
    values: dict
    payload: bytes


@dataclass(frozen=True, slots=True)
class VideoData:
    stream_id: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AudioData:
    stream_id: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class OtherCommand:
    """A command we do not model; args are all values after the transaction id."""

    name: str
    transaction_id: float
    stream_id: int
    args: list


@dataclass(frozen=True, slots=True)
class Result:
    """`_result`; values are all values after the transaction id."""

    transaction_id: float
    values: list


@dataclass(frozen=True, slots=True)
class Error:
    """`_error`; values are all values after the transaction id."""

    transaction_id: float
    values: list


@dataclass(frozen=True, slots=True)
class Status:
    """onStatus; info is the info object (code, level, description...)."""

    stream_id: int
    info: dict


@dataclass(frozen=True, slots=True)
class DataMessage:
    """A data message other than onMetaData (e.g. |RtmpSampleAccess, onTextData)."""

    stream_id: int
    timestamp: int
    name: str
    values: list
    payload: bytes


@dataclass(frozen=True, slots=True)
class UserControl:
    """Stream Begin/EOF/Dry/IsRecorded from the peer (pings are answered inside)."""

    event_type: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    pass
