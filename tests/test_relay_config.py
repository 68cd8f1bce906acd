"""The forward, exec, transcode and ingest directives: SRS's spellings, defaults, errors, program checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from testkit.helpers import config_check

from tidecast.config import ConfigError, Engine, Forward, IngestInput, load_config, parse_text

SRS_SAMPLES = """
listen 1935;
vhost same.vhost.forward.srs.com {
    forward {
        enabled on;
        destination 127.0.0.1:1936 127.0.0.1:1937;
        backend http://127.0.0.1:8085/api/v1/forward;
    }
}
vhost old.forward {
    forward 127.0.0.1:1936 127.0.0.1:1937;
}
vhost exec.srs.com {
    exec {
        enabled on;
        publish ./objs/ffmpeg/bin/ffmpeg -f flv -i [url] -c copy -y ./[stream].flv;
        publish /bin/echo "[app] [stream]";
    }
}
vhost ingest.srs.com {
    ingest livestream {
        enabled on;
        input { type file; url ./doc/source.200kbps.768x320.flv; }
        ffmpeg ./objs/ffmpeg/bin/ffmpeg;
        engine { enabled off; output rtmp://127.0.0.1:[port]/live/livestream?vhost=[vhost]; }
    }
    ingest second { enabled off; input { type stream; url rtmp://x/live/s; } }
}
vhost example.transcode.srs.com {
    transcode {
        enabled on;
        ffmpeg ./objs/ffmpeg/bin/ffmpeg;
        engine example {
            enabled on;
            perfile { re; rtsp_transport tcp; }
            iformat flv;
            vfilter { i ./doc/ffmpeg-logo.png; filter_complex 'overlay=10:10'; }
            vcodec libx264; vbitrate 1500; vfps 25; vwidth 768; vheight 320; vthreads 12;
            vprofile main; vpreset medium;
            vparams { t 100; coder 1; }
            acodec libfdk_aac; abitrate 70; asample_rate 44100; achannels 2;
            aparams { profile:a aac_low; bsf:a aac_adtstoasc; }
            oformat flv;
            output rtmp://127.0.0.1:[port]/[app]/[stream]_[engine]?vhost=[vhost];
        }
        engine copy { enabled on; vcodec copy; acodec copy; output rtmp://127.0.0.1:[port]/[app]/[stream]_[engine]; }
    }
    transcode live/livestream { enabled on; ffmpeg ./objs/ffmpeg/bin/ffmpeg; engine { enabled off; } }
}
"""


def test_srs_samples_read_with_srs_defaults_and_round_trip_through_the_dump() -> None:
    config = parse_text(SRS_SAMPLES)
    assert config.unsupported == []
    forward = config.vhosts["same.vhost.forward.srs.com"].forward
    assert forward == Forward(True, ["127.0.0.1:1936", "127.0.0.1:1937"], "http://127.0.0.1:8085/api/v1/forward")
    assert config.vhosts["old.forward"].forward == Forward(True, ["127.0.0.1:1936", "127.0.0.1:1937"])
    exec_ = config.vhosts["exec.srs.com"].exec
    assert exec_.enabled and exec_.publish == [
        ["./objs/ffmpeg/bin/ffmpeg", "-f", "flv", "-i", "[url]", "-c", "copy", "-y", "./[stream].flv"],
        ["/bin/echo", "[app] [stream]"],
    ]
    first, second = config.vhosts["ingest.srs.com"].ingest
    assert (first.name, first.enabled, first.input, first.ffmpeg) == (
        "livestream",
        True,
        IngestInput("file", "./doc/source.200kbps.768x320.flv"),
        "./objs/ffmpeg/bin/ffmpeg",
    )
    assert first.engine == [Engine(output="rtmp://127.0.0.1:[port]/live/livestream?vhost=[vhost]")]
    assert (second.name, second.enabled, second.input.type, second.engine) == ("second", False, "stream", [])
    whole, scoped = config.vhosts["example.transcode.srs.com"].transcode
    assert (whole.scope, whole.enabled, [e.name for e in whole.engine]) == ("", True, ["example", "copy"])
    example = whole.engine[0]
    assert example.perfile == [("re", ""), ("rtsp_transport", "tcp")]
    assert example.vfilter == [("i", "./doc/ffmpeg-logo.png"), ("filter_complex", "overlay=10:10")]
    assert (example.vfps, example.vwidth, example.vthreads, example.aparams[1]) == (
        25.0,
        768,
        12,
        ("bsf:a", "aac_adtstoasc"),
    )
    assert (scoped.scope, scoped.engine) == ("live/livestream", [Engine()])
    defaults = Engine()
    assert (defaults.iformat, defaults.oformat, defaults.vthreads, defaults.vcodec, defaults.enabled) == (
        "flv",
        "flv",
        1,
        "",
        False,
    )
    again = parse_text(config.dump())
    again.path = config.path
    assert again == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ingest { enabled on; }", "ingest needs exactly one name"),
        ("ingest a { input { type device; } }", 'bad value "device" for type'),
        ("transcode a b { }", "transcode takes at most one scope"),
        ("transcode { engine a b { } }", "engine takes at most one name"),
        ("transcode { engine { vparams { t 1 2; } } }", 'bad option "t"'),
        ("transcode { engine { achannels 6; } }", 'bad value "6" for achannels'),
        ("transcode { engine { vcodec libx264; foo 1; } }", 'unknown directive "foo" in vhost v transcode engine'),
        ("exec { enabled on; publish; }", "publish needs a command line"),
        ("forward { enabled on; dest a:1; }", 'unknown directive "dest" in vhost v forward'),
    ],
)
def test_bad_relay_directives_are_errors_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_text(f"listen 1935;\nvhost v {{\n{text}\n}}\n", "x.conf")
    assert str(info.value).startswith("x.conf:3: ") and message in str(info.value), str(info.value)


def test_a_missing_ffmpeg_is_refused_by_load_and_config_check_naming_the_directive(tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    good = tmp_path / "good.conf"
    good.write_text(
        "listen 1935;\nvhost __defaultVhost__ {\n"
        f"    transcode {{ enabled on; ffmpeg {ffmpeg}; engine ld {{ enabled on; }} }}\n"
        "    ingest a { enabled on; input { url x.flv; } ffmpeg ffmpeg; }\n"
        "    exec { enabled on; publish ffmpeg -i [url]; }\n"
        "}\n"
    )
    load_config(str(good), env={})
    cases = [
        ("transcode { enabled on; ffmpeg ./objs/ffmpeg/bin/ffmpeg; engine ld { enabled on; } }",
         'bad.conf:3: ffmpeg "./objs/ffmpeg/bin/ffmpeg" (in vhost __defaultVhost__ transcode) is not an executable'),
        ("transcode live { enabled on; engine ld { enabled on; } }",
         "bad.conf:3: no ffmpeg in vhost __defaultVhost__ transcode live; add one"),
        ("ingest cam { enabled on; input { url x.flv; } ffmpeg /nonexistent/ffmpeg; }",
         'bad.conf:3: ffmpeg "/nonexistent/ffmpeg" (in vhost __defaultVhost__ ingest cam) is not an executable'),
        ("exec { enabled on; publish no-such-program-tidecast -i [url]; }",
         'bad.conf:3: exec publish program "no-such-program-tidecast" (in vhost __defaultVhost__ exec) is not'),
    ]  # fmt: skip
    bad = tmp_path / "bad.conf"
    for block, message in cases:
        bad.write_text(f"listen 1935;\nvhost __defaultVhost__ {{\n    {block}\n}}\n")
        with pytest.raises(ConfigError) as info:
            load_config(str(bad), env={})
        assert str(info.value).replace(str(tmp_path) + os.sep, "").startswith(message), str(info.value)
    # Disabled blocks need no program: SRS configs carry them switched off.
    bad.write_text(
        "listen 1935;\nvhost __defaultVhost__ {\n"
        "    transcode { enabled off; ffmpeg ./objs/ffmpeg/bin/ffmpeg; engine ld { enabled on; } }\n"
        "    ingest a { enabled off; ffmpeg ./objs/ffmpeg/bin/ffmpeg; }\n"
        "}\n"
    )
    load_config(str(bad), env={})
    bad.write_text(f"listen 1935;\nvhost __defaultVhost__ {{\n    {cases[0][0]}\n}}\n")
    check = config_check(bad)
    assert check.returncode == 1
    assert 'ffmpeg "./objs/ffmpeg/bin/ffmpeg" (in vhost __defaultVhost__ transcode)' in check.stderr


def test_forward_and_exec_take_environment_overrides() -> None:
    from tidecast.config.env import apply_env

    config = parse_text("listen 1935;")
    apply_env(config, {"SRS_VHOST_FORWARD_ENABLED": "on", "SRS_VHOST_FORWARD_DESTINATION": "a:1936 b:1937"})
    assert config.vhost("x").forward == Forward(True, ["a:1936", "b:1937"])
