"""DVR: recording live streams to FLV or MP4 files (SRS's vhost `dvr` block).

`dvr_recorder_for(settings, vhost, app, stream, on_reaped)` gives a `Recorder`
(a MediaSink with `close()` and `tick(now_wall)`) or None when the stream is
not to be recorded.
"""

from tidecast.dvr.paths import DvrPathError
from tidecast.dvr.recorder import DvrSettings, OnReaped, Reaped, Recorder, applies, dvr_recorder_for

__all__ = ["DvrPathError", "DvrSettings", "OnReaped", "Reaped", "Recorder", "applies", "dvr_recorder_for"]
