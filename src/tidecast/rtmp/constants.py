"""RTMP numbers: message type ids, chunk stream ids and user-control events."""

from __future__ import annotations

from typing import Final

# Protocol control messages (chunk stream 2, message stream 0).
SET_CHUNK_SIZE: Final = 1
ABORT: Final = 2
ACKNOWLEDGEMENT: Final = 3
USER_CONTROL: Final = 4
WINDOW_ACK_SIZE: Final = 5
SET_PEER_BANDWIDTH: Final = 6

# Media and command messages. Audio, video and AMF0 data share their ids with
# FLV tag types, which lets a message body become an FLV tag unchanged.
AUDIO: Final = 8
VIDEO: Final = 9
DATA_AMF3: Final = 15
SHARED_OBJECT_AMF3: Final = 16
COMMAND_AMF3: Final = 17
DATA_AMF0: Final = 18
SHARED_OBJECT_AMF0: Final = 19
COMMAND_AMF0: Final = 20
AGGREGATE: Final = 22

# Chunk stream ids used for what we send. The values follow common server
# practice so packet captures read the same as other servers'.
CSID_PROTOCOL: Final = 2
CSID_COMMAND: Final = 3
CSID_DATA: Final = 5
CSID_VIDEO: Final = 6
CSID_AUDIO: Final = 7

# User control event types.
UC_STREAM_BEGIN: Final = 0
UC_STREAM_EOF: Final = 1
UC_STREAM_DRY: Final = 2
UC_SET_BUFFER_LENGTH: Final = 3
UC_STREAM_IS_RECORDED: Final = 4
UC_PING_REQUEST: Final = 6
UC_PING_RESPONSE: Final = 7

DEFAULT_CHUNK_SIZE: Final = 128
MAX_CHUNK_SIZE: Final = 0x7FFFFFFF
EXTENDED_TIMESTAMP: Final = 0xFFFFFF

# Limits on what a peer may make us hold. Stated here once; every layer that
# needs one imports it from here.
#
# Set Chunk Size below this is refused, as SRS does (srs issue 541): tiny
# chunks only multiply per-chunk work. Larger than 65536 is accepted, as in SRS.
MIN_PEER_CHUNK_SIZE: Final = 128
# One message (a video frame, a command, metadata). A 4K keyframe at a high
# bitrate is a few MB.
MAX_MESSAGE_SIZE: Final = 8 * 1024 * 1024
# Bytes of unfinished messages one connection may hold across all its chunk
# streams, the receive buffer included: one maximal message plus the audio and
# commands interleaved with it.
MAX_UNFINISHED_BYTES: int = MAX_MESSAGE_SIZE + 1024 * 1024
# Until its `connect` arrives a server-side connection has sent nothing but a
# handshake: its messages (the connect command itself, a window size, a chunk
# size) are small, so an anonymous socket may not hold a maximal message's worth.
PRE_CONNECT_MAX_MESSAGE_SIZE: Final = 64 * 1024
PRE_CONNECT_MAX_UNFINISHED_BYTES: int = 2 * PRE_CONNECT_MAX_MESSAGE_SIZE
# Distinct chunk stream ids one connection may use; encoders use a handful, but
# each id costs state for as long as the connection lives.
MAX_CHUNK_STREAMS: Final = 256
# Messages one connection hands on per turn of the event loop (the server role); the rest of a read
# waits in its receive buffer, reading paused, until the next turn. Without it a read of 2-byte
# messages (256 KiB is 131,072 of them) or a large Aggregate of tiny tags held the loop for seconds.
MESSAGES_PER_TURN: Final = 1024
