// tidecast's live MP4 player: fetch() the /app/stream.mp4 endpoint, cut the byte stream into
// boxes, and feed init segments and moof+mdat fragments to Media Source Extensions.
// No third-party code: the codecs string is read from the init segment's sample entries.
"use strict";

(function (global) {
  const hex2 = (n) => n.toString(16).padStart(2, "0");
  const u32 = (b, o) => ((b[o] << 24) >>> 0) + (b[o + 1] << 16) + (b[o + 2] << 8) + b[o + 3];
  const kindAt = (b, o) => String.fromCharCode(b[o + 4], b[o + 5], b[o + 6], b[o + 7]);

  // Top-level boxes of b from `start` to `end`: [{kind, start, end, body}] (complete ones only).
  function boxes(b, start, end) {
    const out = [];
    let pos = start;
    while (pos + 8 <= end) {
      let size = u32(b, pos);
      let header = 8;
      if (size === 1) {
        if (pos + 16 > end) break;
        size = u32(b, pos + 8) * 4294967296 + u32(b, pos + 12);
        header = 16;
      }
      if (size < header || pos + size > end) break;
      out.push({ kind: kindAt(b, pos), start: pos, end: pos + size, body: pos + header });
      pos += size;
    }
    return out;
  }

  function child(b, box, path) {
    let cur = box;
    for (const kind of path) {
      const found = boxes(b, cur.body, cur.end).find((x) => x.kind === kind);
      if (!found) return null;
      cur = found;
    }
    return cur;
  }

  function reverseBits32(x) {
    let r = 0;
    for (let i = 0; i < 32; i++) r = ((r << 1) | ((x >>> i) & 1)) >>> 0;
    return r;
  }

  // RFC 6381 codecs parameter of one sample entry (ISO 14496-15 Annex E for HEVC, the AV1 and VP9
  // codec-string rules for theirs).
  function entryCodec(b, entry) {
    const kind = entry.kind;
    const visual = ["avc1", "avc3", "hvc1", "hev1", "av01", "vp09"].includes(kind);
    const inner = { kind, start: entry.start, end: entry.end, body: entry.body + (visual ? 78 : 28) };
    const config = (name) => child(b, inner, [name]);
    if (kind === "avc1" || kind === "avc3") {
      const c = config("avcC");
      return c ? `${kind}.${hex2(b[c.body + 1])}${hex2(b[c.body + 2])}${hex2(b[c.body + 3])}` : kind;
    }
    if (kind === "hvc1" || kind === "hev1") {
      const c = config("hvcC");
      if (!c) return kind;
      const o = c.body;
      const space = ["", "A", "B", "C"][b[o + 1] >> 6];
      const tier = b[o + 1] & 0x20 ? "H" : "L";
      const profile = b[o + 1] & 0x1f;
      const compat = reverseBits32(u32(b, o + 2)).toString(16);
      const constraints = Array.from(b.subarray(o + 6, o + 12));
      while (constraints.length && constraints[constraints.length - 1] === 0) constraints.pop();
      const tail = constraints.map((x) => "." + x.toString(16).toUpperCase()).join("");
      return `${kind}.${space}${profile}.${compat}.${tier}${b[o + 12]}${tail}`;
    }
    if (kind === "av01") {
      const c = config("av1C");
      if (!c) return kind;
      const o = c.body;
      const profile = b[o + 1] >> 5;
      const level = b[o + 1] & 0x1f;
      const tier = b[o + 2] & 0x80 ? "H" : "M";
      const depth = b[o + 2] & 0x40 ? (profile === 2 && b[o + 2] & 0x20 ? 12 : 10) : 8;
      return `av01.${profile}.${String(level).padStart(2, "0")}${tier}.${String(depth).padStart(2, "0")}`;
    }
    if (kind === "vp09") {
      const c = config("vpcC");
      if (!c) return kind;
      const o = c.body + 4; // a full box
      const pad = (n) => String(n).padStart(2, "0");
      return `vp09.${pad(b[o])}.${pad(b[o + 1])}.${pad(b[o + 2] >> 4)}`;
    }
    if (kind === "mp4a") {
      const c = config("esds");
      if (!c) return "mp4a.40.2";
      // ES_Descriptor (3) > DecoderConfigDescriptor (4): objectTypeIndication, then
      // DecoderSpecificInfo (5): the AudioSpecificConfig, whose first 5 bits are the object type.
      let o = c.body + 4;
      const end = c.end;
      let objectType = 0x40;
      let aot = 2;
      while (o < end) {
        const tag = b[o++];
        let len = 0;
        for (let i = 0; i < 4; i++) {
          const x = b[o++];
          len = (len << 7) | (x & 0x7f);
          if (!(x & 0x80)) break;
        }
        if (tag === 3) {
          const flags = b[o + 2];
          o += 3 + (flags & 0x80 ? 2 : 0) + (flags & 0x40 ? 1 + b[o + 3] : 0) + (flags & 0x20 ? 2 : 0);
        } else if (tag === 4) {
          objectType = b[o];
          o += 13;
        } else if (tag === 5) {
          aot = b[o] >> 3;
          if (aot === 31) aot = 32 + (((b[o] & 7) << 3) | (b[o + 1] >> 5));
          break;
        } else {
          o += len;
        }
      }
      return `mp4a.${objectType.toString(16)}.${aot}`;
    }
    if (kind === "Opus") return "opus";
    return kind;
  }

  // The codecs of an init segment (ftyp + moov), in track order.
  function initCodecs(b, moov) {
    const out = [];
    for (const trak of boxes(b, moov.body, moov.end).filter((x) => x.kind === "trak")) {
      const stsd = child(b, trak, ["mdia", "minf", "stbl", "stsd"]);
      if (!stsd) continue;
      const entries = boxes(b, stsd.body + 8, stsd.end); // version/flags, entry count
      if (entries.length) out.push(entryCodec(b, entries[0]));
    }
    return out;
  }

  // Track id -> timescale, from each trak's tkhd and mdhd.
  function initTimescales(b, moov) {
    const out = {};
    for (const trak of boxes(b, moov.body, moov.end).filter((x) => x.kind === "trak")) {
      const tkhd = child(b, trak, ["tkhd"]);
      const mdhd = child(b, trak, ["mdia", "mdhd"]);
      if (!tkhd || !mdhd) continue;
      const id = u32(b, tkhd.body + (b[tkhd.body] === 1 ? 20 : 12));
      out[id] = u32(b, mdhd.body + (b[mdhd.body] === 1 ? 20 : 12));
    }
    return out;
  }

  // Seconds of the first traf's tfdt of a moof, or null.
  function fragmentStart(b, moof, timescales) {
    const traf = child(b, moof, ["traf"]);
    if (!traf) return null;
    const tfhd = child(b, traf, ["tfhd"]);
    const tfdt = child(b, traf, ["tfdt"]);
    if (!tfhd || !tfdt) return null;
    const scale = timescales[u32(b, tfhd.body + 4)];
    if (!scale) return null;
    const t = b[tfdt.body] === 1 ? u32(b, tfdt.body + 4) * 4294967296 + u32(b, tfdt.body + 8) : u32(b, tfdt.body + 4);
    return t / scale;
  }

  class TidecastPlayer {
    // video: an HTMLVideoElement; url: the live MP4 endpoint; onState(text) is told what happens.
    constructor(video, url, onState) {
      this.video = video;
      this.url = url;
      this.onState = onState || (() => {});
      this.error = "";
      this.codecs = [];
      this.bytes = 0;
      this.fragments = 0;
      this.queue = [];
      this.abort = new AbortController();
      this.sourceBuffer = null;
      this.mediaSource = null;
      this.timer = null;
      this.closed = false;
      this.lastInit = null;
      this.timescales = {};
      this.lastStart = null;
    }

    fail(message) {
      if (!this.error) this.error = String(message);
      this.onState("error: " + this.error);
      this.close();
    }

    async start() {
      let response;
      try {
        response = await fetch(this.url, { signal: this.abort.signal, cache: "no-store" });
      } catch (e) {
        if (!this.closed) this.fail(`cannot fetch ${this.url}: ${e}`);
        return;
      }
      if (!response.ok) {
        const text = (await response.text()).trim();
        this.fail(`${this.url}: HTTP ${response.status} ${text}`);
        return;
      }
      this.onState("connected");
      this.timer = setInterval(() => this.tick(), 500);
      const reader = response.body.getReader();
      let buf = new Uint8Array(0);
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          this.bytes += value.length;
          const joined = new Uint8Array(buf.length + value.length);
          joined.set(buf);
          joined.set(value, buf.length);
          buf = joined;
          const found = boxes(buf, 0, buf.length);
          let used = 0;
          for (let i = 0; i < found.length; i++) {
            const box = found[i];
            if (box.kind === "ftyp" || box.kind === "moof") {
              // Wait for the box that completes it: moov after ftyp, mdat after moof.
              if (i + 1 >= found.length) break;
              const next = found[i + 1];
              this.segment(buf, box.start, next.end, box.kind === "ftyp" ? next : null, box);
              used = next.end;
              i++;
            } else {
              used = box.end; // anything else at top level is skipped
            }
          }
          if (used) buf = buf.slice(used);
        }
        if (!this.closed) this.fail("the server ended the stream (unpublished or kicked)");
      } catch (e) {
        if (!this.closed) this.fail(`reading ${this.url}: ${e}`);
      }
    }

    segment(buf, start, end, moov, first) {
      const data = buf.slice(start, end);
      if (moov) {
        const codecs = initCodecs(buf, moov);
        if (this.sourceBuffer && codecs.join() !== this.codecs.join()) {
          // A new track layout (codec change): a fresh MediaSource takes it.
          this.resetSource();
        }
        this.codecs = codecs;
        this.lastInit = data;
        this.timescales = initTimescales(buf, moov);
        if (!this.mediaSource) this.openSource();
      } else {
        this.fragments++;
        const t = fragmentStart(buf, first, this.timescales);
        if (t !== null && this.lastStart !== null && t < this.lastStart - 1 && this.lastInit) {
          // Time went back (a new publish restarted at 0): a fresh MediaSource, from the last init.
          this.resetSource();
          this.queue.push(this.lastInit);
          this.openSource();
        }
        if (t !== null) this.lastStart = t;
      }
      this.queue.push(data);
      this.pump();
    }

    mime() {
      return `video/mp4; codecs="${this.codecs.join(", ")}"`;
    }

    openSource() {
      const mime = this.mime();
      if (!global.MediaSource || !MediaSource.isTypeSupported(mime)) {
        this.fail(`this browser cannot play ${mime}`);
        return;
      }
      const ms = new MediaSource();
      this.mediaSource = ms;
      this.video.src = URL.createObjectURL(ms);
      ms.addEventListener("sourceopen", () => {
        if (this.mediaSource !== ms) return;
        try {
          this.sourceBuffer = ms.addSourceBuffer(mime);
        } catch (e) {
          this.fail(`addSourceBuffer(${mime}): ${e}`);
          return;
        }
        this.sourceBuffer.addEventListener("updateend", () => this.pump());
        this.sourceBuffer.addEventListener("error", () => this.fail("SourceBuffer error"));
        this.onState(`playing ${this.codecs.join(" + ")}`);
        this.pump();
      });
      this.video.addEventListener("error", () => {
        const err = this.video.error;
        if (err) this.fail(`video element error ${err.code}: ${err.message || ""}`);
      });
    }

    resetSource() {
      // Keep only the init segment about to be queued.
      this.queue = [];
      this.sourceBuffer = null;
      this.mediaSource = null;
    }

    pump() {
      const sb = this.sourceBuffer;
      if (!sb || sb.updating || !this.queue.length || this.closed) return;
      const next = this.queue.shift();
      try {
        sb.appendBuffer(next);
      } catch (e) {
        if (e.name === "QuotaExceededError") {
          this.queue.unshift(next);
          this.trim(5);
        } else {
          this.fail(`appendBuffer: ${e}`);
        }
      }
    }

    trim(keepSeconds) {
      const sb = this.sourceBuffer;
      const t = this.video.currentTime;
      if (sb && !sb.updating && sb.buffered.length && t - sb.buffered.start(0) > keepSeconds) {
        sb.remove(0, t - keepSeconds);
      }
    }

    // Live playback: start where the data is, stay near the live edge, jump over holes a skip left.
    tick() {
      const v = this.video;
      const ranges = v.buffered;
      if (!ranges.length) return;
      const end = ranges.end(ranges.length - 1);
      let inside = false;
      for (let i = 0; i < ranges.length; i++) {
        if (v.currentTime >= ranges.start(i) && v.currentTime <= ranges.end(i)) inside = true;
      }
      if (!inside) {
        for (let i = 0; i < ranges.length; i++) {
          if (ranges.start(i) > v.currentTime) {
            v.currentTime = ranges.start(i) + 0.01;
            break;
          }
        }
      } else if (end - v.currentTime > 4) {
        v.currentTime = end - 1;
      }
      if (v.paused && !v.ended && v.readyState >= 2) v.play().catch(() => {});
      this.trim(30);
    }

    close() {
      this.closed = true;
      this.abort.abort();
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
    }
  }

  global.TidecastPlayer = TidecastPlayer;
  global.tidecastInitCodecs = (bytes) => {
    const found = boxes(bytes, 0, bytes.length);
    const moov = found.find((x) => x.kind === "moov");
    return moov ? initCodecs(bytes, moov) : [];
  };
})(window);
