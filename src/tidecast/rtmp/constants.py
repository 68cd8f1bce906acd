"""RTMP numbers: message type ids, chunk stream ids and user-control events."""

from __future__ import annotations

# Protocol control messages (chunk stream 2, message stream 0).
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6

# Media and command messages. Audio, video and AMF0 data share their ids with
# FLV tag types, which lets a message body become an FLV tag unchanged.
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# Chunk stream ids used for what we send. The values follow common server
# practice so packet captures read the same as other servers'.
CSID_PROTOCOL = 2
CSID_COMMAND = 3
CSID_DATA = 5
CSID_VIDEO = 6
CSID_AUDIO = 7

# User control event types.
UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_STREAM_DRY = 2
UC_SET_BUFFER_LENGTH = 3
UC_STREAM_IS_RECORDED = 4
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF
EXTENDED_TIMESTAMP = 0xFFFFFF

# Limits on what a peer may make us hold. Stated here once; every layer that
# needs one imports it from here.
#
# Set Chunk Size below this is refused, as SRS does (srs issue 541): tiny
# chunks only multiply per-chunk work. Larger than 65536 is accepted, as in SRS.
MIN_PEER_CHUNK_SIZE = 128
# One message (a video frame, a command, metadata). A 4K keyframe at a high
# bitrate is a few MB.
MAX_MESSAGE_SIZE = 8 * 1024 * 1024
# Bytes of unfinished messages one connection may hold across all its chunk
# streams, the receive buffer included: one maximal message plus the audio and
# commands interleaved with it.
MAX_UNFINISHED_BYTES = MAX_MESSAGE_SIZE + 1024 * 1024
# Until its `connect` arrives a server-side connection has sent nothing but a
# handshake: its messages (the connect command itself, a window size, a chunk
# size) are small, so an anonymous socket may not hold a maximal message's worth.
PRE_CONNECT_MAX_MESSAGE_SIZE = 64 * 1024
PRE_CONNECT_MAX_UNFINISHED_BYTES = 2 * PRE_CONNECT_MAX_MESSAGE_SIZE
# Distinct chunk stream ids one connection may use; encoders use a handful, but
# each id costs state for as long as the connection lives.
MAX_CHUNK_STREAMS = 256
# Messages one connection hands on per turn of the event loop (the server role); the rest of a read
# waits in its receive buffer, reading paused, until the next turn. Without it a read of 2-byte
# messages (256 KiB is 131,072 of them) or a large Aggregate of tiny tags held the loop for seconds.
MESSAGES_PER_TURN = 1024
