"""codec/mp4: files written from FLV-style inputs, read back by ffprobe and decoded by ffmpeg."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from testkit.helpers import decode_errors, ffprobe_json

from tidecast.codec import aac, avc, mp4
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, iter_flv_tags
from tidecast.errors import ProtocolError

# ---------------------------------------------------------------- helpers


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    out = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        out.append((kind, pos, size))
        pos += size
    return out


def child(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(offset, size) of the first box along `path`, descending into containers."""
    end = len(data) if end is None else end
    for i, name in enumerate(path):
        for kind, pos, size in boxes(data, start, end):
            if kind == name:
                header = 16 if struct.unpack_from(">I", data, pos)[0] == 1 else 8
                start, end = pos + header, pos + size
                if i == len(path) - 1:
                    return pos, size
                break
        else:
            raise KeyError(name)
    raise KeyError(path)


def flv_samples(clip: Path) -> tuple[bytes, bytes, list[tuple[str, int, int, bytes, bool]]]:
    """(avcC, ASC, [(kind, dts ms, cts ms, data, sync)]) of an H.264+AAC FLV file."""
    avcc = asc = b""
    samples = []
    for type_id, ts, payload in iter_flv_tags(clip.read_bytes()):
        if type_id == TAG_VIDEO:
            if payload[1] == 0:
                avcc = payload[5:]
            elif payload[1] == 1:
                cts = int.from_bytes(payload[2:5], "big", signed=True)
                samples.append(("video", ts, cts, payload[5:], payload[0] >> 4 == 1))
        elif type_id == TAG_AUDIO:
            if payload[1] == 0:
                asc = payload[2:]
            else:
                samples.append(("audio", ts, 0, payload[2:], True))
    return avcc, asc, samples


def tracks_for(avcc: bytes, asc: bytes) -> tuple[mp4.TrackSpec, mp4.TrackSpec]:
    width, height = avc.parse_sps(avc.parse_config(avcc).sps[0])
    config = aac.parse_config(asc)
    return mp4.avc_track(avcc, width, height), mp4.aac_track(asc, config.sample_rate, config.channels)


def progressive(clip: Path, reserve: int = 0) -> tuple[bytes, mp4.ProgressiveMp4, int]:
    """The clip as a progressive MP4 with the moov at the end (or in `reserve`); also the video frame count."""
    avcc, asc, samples = flv_samples(clip)
    video, audio = tracks_for(avcc, asc)
    writer = mp4.ProgressiveMp4(reserve)
    writer.set_track("video", video, 40)
    writer.set_track("audio", audio, 1024)
    out = bytearray(writer.header())
    audio_n = 0
    for kind, ts, cts, data, sync in samples:
        if kind == "video":
            writer.add("video", ts, cts, len(data), sync)
        else:
            writer.add("audio", audio_n * 1024, 0, len(data), True)
            audio_n += 1
        out += data
    assert writer.position == len(out)
    moov = writer.moov()
    fitted = writer.in_reserve(moov)
    if fitted is None:
        out += moov
    else:
        out[writer.reserve_offset : writer.reserve_offset + len(fitted)] = fitted
    out[writer.mdat_header_offset : writer.mdat_header_offset + 16] = writer.mdat_header()
    return bytes(out), writer, sum(1 for s in samples if s[0] == "video")


def probe(path: Path) -> dict[str, dict[str, str]]:
    info = ffprobe_json(str(path), "-count_frames")
    return {s["codec_type"]: s for s in info["streams"]} | {"format": info["format"]}


# ---------------------------------------------------------------- progressive


def test_progressive_mp4_moov_at_end_reads_back(clip: Path, tmp_path: Path) -> None:
    data, writer, video_frames = progressive(clip)
    assert [b[0] for b in boxes(data)] == [b"ftyp", b"mdat", b"moov"]
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    info = probe(path)
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac"
    assert (info["video"]["width"], info["video"]["height"]) == (320, 240)
    assert int(info["video"]["nb_read_frames"]) == video_frames == 150
    assert float(info["format"]["duration"]) == pytest.approx(6.0, abs=0.2)
    assert writer.duration_ms() == pytest.approx(6000, abs=200)
    assert decode_errors(path) == ""


def test_fast_start_copy_puts_moov_first_and_shifts_offsets(clip: Path, tmp_path: Path) -> None:
    data, writer, video_frames = progressive(clip)
    prefix, mdat_at = writer.faststart_layout()
    moov_size = len(writer.moov())
    fast = prefix + writer.mdat_header() + data[mdat_at + 16 : len(data) - moov_size]
    assert [b[0] for b in boxes(fast)] == [b"ftyp", b"moov", b"mdat"]
    path = tmp_path / "fast.mp4"
    path.write_bytes(fast)
    info = probe(path)
    assert int(info["video"]["nb_read_frames"]) == video_frames
    assert decode_errors(path) == ""
    # Same frames as the moov-at-end file: the offsets were shifted, not the data.
    slow = tmp_path / "slow.mp4"
    slow.write_bytes(data)
    for f in (slow, path):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(f), "-map", "0:v", "-c", "copy", "-f", "h264",
                        str(f) + ".h264"], check=True)  # fmt: skip
    assert Path(str(slow) + ".h264").read_bytes() == Path(str(path) + ".h264").read_bytes()


def test_moov_in_reserved_space_is_fast_start_without_a_copy(clip: Path, tmp_path: Path) -> None:
    data, _, video_frames = progressive(clip, reserve=64 * 1024)
    assert [b[0] for b in boxes(data)] == [b"ftyp", b"moov", b"free", b"mdat"]
    path = tmp_path / "reserved.mp4"
    path.write_bytes(data)
    assert int(probe(path)["video"]["nb_read_frames"]) == video_frames
    assert decode_errors(path) == ""
    # Too small a reserve: the moov goes at the end instead, the file is still whole.
    small, _, _ = progressive(clip, reserve=512)
    assert [b[0] for b in boxes(small)] == [b"ftyp", b"free", b"mdat", b"moov"]
    path.write_bytes(small)
    assert decode_errors(path) == ""


def test_a_track_starting_later_gets_an_empty_edit(clip: Path, tmp_path: Path) -> None:
    avcc, asc, samples = flv_samples(clip)
    video, audio = tracks_for(avcc, asc)
    writer = mp4.ProgressiveMp4()
    writer.set_track("video", video, 40)
    writer.set_track("audio", audio, 1024)
    out = bytearray(writer.header())
    n = 0
    for kind, ts, cts, data, sync in samples:
        if kind == "video":
            writer.add("video", ts, cts, len(data), sync)
        else:
            writer.add("audio", 44100 + n * 1024, 0, len(data), True)  # audio starts 1 s late
            n += 1
        out += data
    out += writer.moov()
    out[writer.mdat_header_offset : writer.mdat_header_offset + 16] = writer.mdat_header()
    path = tmp_path / "late.mp4"
    path.write_bytes(bytes(out))
    info = probe(path)
    assert float(info["audio"]["start_time"]) == pytest.approx(1.0, abs=0.05)
    assert float(info["video"]["start_time"]) < 0.2


# ---------------------------------------------------------------- fragmented


def test_fragmented_mp4_init_plus_fragments_plays_as_one_file(clip: Path, tmp_path: Path) -> None:
    avcc, asc, samples = flv_samples(clip)
    video, audio = tracks_for(avcc, asc)
    init = mp4.init_segment([video, audio])
    assert [b[0] for b in boxes(init)] == [b"ftyp", b"moov"]
    child(init, [b"moov", b"mvex", b"trex"])
    # One fragment per GOP, as an HLS/CMAF segmenter would cut them.
    gops: list[list[tuple[str, int, int, bytes, bool]]] = []
    for s in samples:
        if (s[0] == "video" and s[4]) or not gops:
            gops.append([])
        gops[-1].append(s)
    all_video = [s for s in samples if s[0] == "video"]
    fragments = []
    audio_n = 0
    for seq, gop in enumerate(gops, 1):
        vids = [s for s in gop if s[0] == "video"]
        auds = [s for s in gop if s[0] == "audio"]
        vrun = []
        for s in vids:
            i = all_video.index(s)
            nxt = all_video[i + 1][1] if i + 1 < len(all_video) else s[1] + 40
            vrun.append(mp4.Sample(nxt - s[1], s[3], s[4], s[2]))
        arun = [mp4.Sample(1024, s[3]) for s in auds]
        fragments.append(
            mp4.media_fragment(
                seq, [mp4.TrackRun(1, vids[0][1] if vids else 0, vrun), mp4.TrackRun(2, audio_n * 1024, arun)]
            )
        )
        audio_n += len(arun)
    assert [b[0] for b in boxes(fragments[0])] == [b"moof", b"mdat"]
    path = tmp_path / "cmaf.mp4"
    path.write_bytes(init + b"".join(fragments))
    info = probe(path)
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac"
    assert int(info["video"]["nb_read_frames"]) == len(all_video)
    assert int(info["audio"]["nb_read_frames"]) == audio_n
    assert float(info["format"]["duration"]) == pytest.approx(6.0, abs=0.2)
    assert decode_errors(path) == ""
    # Fragments stand alone after the init segment: a player joining at the third one decodes.
    late = tmp_path / "late.mp4"
    late.write_bytes(init + b"".join(fragments[2:]))
    assert decode_errors(late) == ""
    assert int(probe(late)["video"]["nb_read_frames"]) == sum(1 for g in gops[2:] for s in g if s[0] == "video")


# ---------------------------------------------------------------- other codecs, from ffmpeg's own MP4


def read_mp4_track(data: bytes, index: int) -> tuple[bytes, bytes, list[tuple[int, int, bytes, bool]], int]:
    """A minimal reader for ffmpeg's progressive output: (entry fourcc, config box body, samples, timescale)
    of track `index`; samples are (dts, cts, data, sync)."""
    moov_at, moov_size = child(data, [b"moov"])
    traks = [b for b in boxes(data, moov_at + 8, moov_at + moov_size) if b[0] == b"trak"][index]
    t0, t1 = traks[1] + 8, traks[1] + traks[2]

    def body(path: list[bytes]) -> bytes | None:
        try:
            at, size = child(data, path, t0, t1)
        except KeyError:
            return None
        return data[at + 8 : at + size]

    mdhd = body([b"mdia", b"mdhd"])
    assert mdhd is not None
    timescale = struct.unpack_from(">I", mdhd, 12 if mdhd[0] == 0 else 20)[0]
    stbl = [b"mdia", b"minf", b"stbl"]
    stsd = body([*stbl, b"stsd"])
    assert stsd is not None
    fourcc = stsd[12:16]
    entry_end = 8 + struct.unpack_from(">I", stsd, 8)[0]
    skip = 8 + 78 if fourcc in (b"hvc1", b"hev1", b"av01", b"vp09") else 8 + 28
    config = b""
    for kind, pos, size in boxes(stsd, 8 + skip, entry_end):
        if kind in (b"hvcC", b"av1C", b"vpcC", b"dOps", b"avcC"):
            config = stsd[pos + 8 : pos + size]
    stsz = body([*stbl, b"stsz"]) or b""
    sizes = list(struct.unpack_from(f">{struct.unpack_from('>I', stsz, 8)[0]}I", stsz, 12))
    stco = body([*stbl, b"stco"])
    offsets = list(struct.unpack_from(f">{struct.unpack_from('>I', stco, 4)[0]}I", stco, 8)) if stco else []
    stsc = body([*stbl, b"stsc"]) or b""
    runs = [struct.unpack_from(">III", stsc, 8 + 12 * i) for i in range(struct.unpack_from(">I", stsc, 4)[0])]
    stts = body([*stbl, b"stts"]) or b""
    deltas: list[int] = []
    for i in range(struct.unpack_from(">I", stts, 4)[0]):
        count, delta = struct.unpack_from(">II", stts, 8 + 8 * i)
        deltas += [delta] * count
    ctts = body([*stbl, b"ctts"])
    ctss: list[int] = []
    if ctts:
        for i in range(struct.unpack_from(">I", ctts, 4)[0]):
            count, off = struct.unpack_from(">Ii", ctts, 8 + 8 * i)
            ctss += [off] * count
    stss = body([*stbl, b"stss"])
    syncs = set(struct.unpack_from(f">{struct.unpack_from('>I', stss, 4)[0]}I", stss, 8)) if stss else None
    samples = []
    n = 0
    dts = 0
    for ci, offset in enumerate(offsets):
        per = next(r[1] for r in reversed(runs) if r[0] <= ci + 1)
        pos = offset
        for _ in range(per):
            size = sizes[n]
            samples.append((dts, ctss[n] if ctss else 0, data[pos : pos + size], syncs is None or n + 1 in syncs))
            pos += size
            dts += deltas[n]
            n += 1
    return fourcc, config, samples, timescale


CODECS = {
    "hevc": (["-c:v", "libx265", "-x265-params", "log-level=error:keyint=25"], b"hvc1", "hvc1", "hevc"),
    "av1": (["-c:v", "libaom-av1", "-cpu-used", "8", "-g", "25", "-b:v", "200k"], b"av01", "av01", "av1"),
    "vp9": (["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "25"], b"vp09", "vp09", "vp9"),
}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_other_video_codecs_and_opus_from_their_config_records(name: str, tmp_path: Path) -> None:
    args, entry, fourcc, codec_name = CODECS[name]
    source = tmp_path / f"src-{name}.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=192x108:rate=25", "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=48000", "-t", "2", *args, "-pix_fmt", "yuv420p", "-tag:v", fourcc,
         "-c:a", "libopus", "-b:a", "32k", str(source)],
        check=True, timeout=60,
    )  # fmt: skip
    data = source.read_bytes()
    vfourcc, vconfig, vsamples, vscale = read_mp4_track(data, 0)
    afourcc, aconfig, asamples, _ascale = read_mp4_track(data, 1)
    assert vfourcc == entry and afourcc == b"Opus"
    video = mp4.TrackSpec("video", fourcc, vconfig, vscale, width=192, height=108)
    audio = mp4.opus_track(aconfig)
    # Progressive.
    writer = mp4.ProgressiveMp4()
    writer.set_track("video", video, vsamples[1][0] - vsamples[0][0])
    writer.set_track("audio", audio, 960)
    out = bytearray(writer.header())
    for (dts, cts, sample, sync), kind in [(s, "video") for s in vsamples] + [(s, "audio") for s in asamples]:
        writer.add(kind, dts, cts, len(sample), sync)
        out += sample
    out += writer.moov()
    out[writer.mdat_header_offset : writer.mdat_header_offset + 16] = writer.mdat_header()
    path = tmp_path / f"{name}.mp4"
    path.write_bytes(bytes(out))
    info = probe(path)
    assert info["video"]["codec_name"] == codec_name and info["audio"]["codec_name"] == "opus"
    assert int(info["video"]["nb_read_frames"]) == len(vsamples) == 50
    assert decode_errors(path) == ""
    # Fragmented: one fragment per track run.
    frag_path = tmp_path / f"{name}-cmaf.mp4"
    vrun = [
        mp4.Sample((vsamples[i + 1][0] if i + 1 < len(vsamples) else s[0] + 1000) - s[0], s[2], s[3], s[1])
        for i, s in enumerate(vsamples)
    ]
    arun = [mp4.Sample(960, s[2]) for s in asamples]
    frag_path.write_bytes(
        mp4.init_segment([video, audio]) + mp4.media_fragment(1, [mp4.TrackRun(1, 0, vrun), mp4.TrackRun(2, 0, arun)])
    )
    info = probe(frag_path)
    assert info["video"]["codec_name"] == codec_name and info["audio"]["codec_name"] == "opus"
    assert int(info["video"]["nb_read_frames"]) == len(vsamples)
    assert decode_errors(frag_path) == ""


# ---------------------------------------------------------------- boxes


def test_opus_head_becomes_a_big_endian_dops() -> None:
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, -256, 0)
    assert mp4.dops_from_opus_head(head) == struct.pack(">BBHIhB", 0, 2, 312, 48000, -256, 0)
    assert mp4.opus_track(head).channels == 2
    with pytest.raises(ProtocolError):
        mp4.dops_from_opus_head(b"OpusTags")


def test_unknown_codecs_and_bad_timescales_are_refused() -> None:
    with pytest.raises(ProtocolError, match="vp08"):
        mp4.TrackSpec("video", "vp08", b"", 1000)
    with pytest.raises(ProtocolError, match="timescale"):
        mp4.TrackSpec("audio", "mp4a", b"\x12\x10", 0)
    writer = mp4.ProgressiveMp4()
    writer.set_track("video", mp4.avc_track(b"\x01", 2, 2))
    with pytest.raises(ProtocolError, match="codec or timescale"):
        writer.set_track("video", mp4.TrackSpec("video", "hvc1", b"", 1000))


def test_esds_long_descriptor_and_large_box_sizes() -> None:
    asc = bytes(200)  # over 127 bytes: the 4-byte length form
    body = mp4.esds(asc, 2)
    assert body[12] == 0x03 and body[13] & 0x80
    big = mp4.box(b"mdat", b"")
    assert struct.unpack(">I4s", big) == (8, b"mdat")


@pytest.mark.parametrize("part_ms", [0, 200])
def test_fragment_writer_from_flv_tags_cuts_segments_and_parts(clip: Path, tmp_path: Path, part_ms: int) -> None:
    """What an fMP4 HLS muxer does: tracks from the FLV sequence headers, a fragment at each keyframe
    (or every `part_ms`, as low-latency parts), the newest sample of each track held for its duration."""
    tags = list(iter_flv_tags(clip.read_bytes()))
    video = next(mp4.video_track_from_flv(p) for t, _, p in tags if t == TAG_VIDEO and p[1] == 0)
    audio = next(mp4.audio_track_from_flv(p) for t, _, p in tags if t == TAG_AUDIO and p[1] == 0)
    assert (video.codec, video.width, video.height, audio.codec, audio.timescale) == ("avc1", 320, 240, "mp4a", 44100)
    writer = mp4.FragmentWriter([video, audio], [40, 1024])
    out = [writer.init_segment()]
    frames = audio_frames = 0
    last_cut = 0
    for type_id, ts, payload in tags:
        if type_id == TAG_VIDEO:
            parts = mp4.flv_video(payload)
            if parts is None or parts[1] != 1:
                continue
            sync = payload[0] >> 4 == 1
            if (sync and not part_ms) or (part_ms and ts - last_cut >= part_ms):
                out.append(writer.fragment())
                last_cut = ts
            writer.add(0, ts, parts[3], sync, parts[2])
            frames += 1
        elif type_id == TAG_AUDIO:
            aparts = mp4.flv_audio(payload)
            if aparts is not None and aparts[1] == 1:
                writer.add(1, audio_frames * 1024, aparts[2])
                audio_frames += 1
    out.append(writer.fragment(final=True))
    assert writer.fragment(final=True) == b""
    assert writer.sequence == len([o for o in out[1:] if o])
    if not part_ms:
        assert writer.sequence == 6  # one per second of the 6 s clip
    path = tmp_path / "live.mp4"
    path.write_bytes(b"".join(out))
    info = probe(path)
    assert int(info["video"]["nb_read_frames"]) == frames == 150
    assert int(info["audio"]["nb_read_frames"]) == audio_frames
    assert float(info["format"]["duration"]) == pytest.approx(6.0, abs=0.2)
    assert decode_errors(path) == ""


def test_flv_helpers_refuse_what_mp4_cannot_carry() -> None:
    assert mp4.flv_video(b"\x17\x02\x00\x00\x00") is None  # AVC end of sequence
    assert mp4.flv_video(b"\x12\x00\x00\x00\x00") is None  # Sorenson H.263
    assert mp4.flv_audio(b"\x2f\x00") is None  # MP3
    assert mp4.flv_audio(b"\x90mp4a\x12\x10") == ("mp4a", 0, b"\x12\x10")  # E-RTMP AAC sequence start
    assert mp4.audio_track_from_flv(b"\x90mp4a\x12\x10").timescale == 44100
    assert mp4.flv_video(b"\x93vp09\x00") == ("vp09", 1, 0, b"\x00")  # CodedFramesX
    with pytest.raises(ProtocolError, match="sequence header"):
        mp4.video_track_from_flv(b"\x27\x01\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="vp08"):
        mp4.video_track_from_flv(b"\x90vp08\x00")


def test_offsets_past_4_gib_switch_stco_to_co64() -> None:
    writer = mp4.ProgressiveMp4()
    writer.set_track("audio", mp4.aac_track(b"\x12\x10", 44100, 2), 1024)
    writer.set_track("video", mp4.avc_track(b"\x01", 2, 2), 40)
    writer.add("audio", 0, 0, 100, True)
    child(writer.moov(), [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stco"])
    writer.position = 5 * 1024**3  # as after 5 GiB of media
    writer.add("video", 0, 0, 100, True)
    moov = writer.moov()
    traks = [b for b in boxes(moov, 8) if b[0] == b"trak"]
    at, _ = child(moov, [b"mdia", b"minf", b"stbl", b"co64"], traks[1][1] + 8, traks[1][1] + traks[1][2])
    assert struct.unpack_from(">IQ", moov, at + 12) == (1, 5 * 1024**3)
    assert struct.unpack(">I4sQ", writer.mdat_header()) == (1, b"mdat", writer.position - writer.mdat_header_offset)
