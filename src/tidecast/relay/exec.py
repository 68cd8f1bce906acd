"""`exec { enabled; publish CMD …; }`: a process per `publish` line while a stream is live.

Each argument of the command gets SRS's variables ([vhost] [port] [app]
[stream] [tcUrl] [swfUrl] [pageUrl] [url], the date ones). There is no shell,
as in SRS; `>FILE`, `1>FILE`, `2>FILE`, `1 > FILE` and `2 > FILE` redirect the
process's stdout or stderr to a file (relative to tidecast's working directory).
Without a redirect, stdout is discarded and stderr goes to the log.
"""

from __future__ import annotations

from tidecast.config import Config
from tidecast.pathvars import date_vars, substitute
from tidecast.relay.base import ProcessRelay, Spec
from tidecast.relay.supervisor import Redirects, RestartPolicy
from tidecast.relay.vars import StreamInfo, rtmp_url, stream_values


def expand(template: str, info: StreamInfo) -> str:
    out = date_vars(substitute(template, stream_values(info)))
    if "[url]" in out:
        # The stream as a client would address it: the host it connected to, this server's port.
        out = out.replace("[url]", rtmp_url(info.host or "127.0.0.1", info.port, info))
    return out


def split_redirects(args: list[str]) -> tuple[list[str], Redirects]:
    """The argv without its redirections, and where stdout/stderr go."""
    argv: list[str] = []
    stdout = stderr = None
    i = 0
    while i < len(args):
        arg = args[i]
        following = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("1", "2") and following.startswith(">"):
            target = following[1:] or (args[i + 2] if i + 2 < len(args) else "")
            i += 2 if following != ">" else 3
            if arg == "1":
                stdout = target or stdout
            else:
                stderr = target or stderr
            continue
        if arg == ">" and following:
            stdout, i = following, i + 2
            continue
        if arg.startswith("2>"):
            stderr, i = arg[2:] or stderr, i + 1
            continue
        if arg.startswith("1>"):
            stdout, i = arg[2:] or stdout, i + 1
            continue
        if arg.startswith(">"):
            stdout, i = arg[1:] or stdout, i + 1
            continue
        argv.append(arg)
        i += 1
    return argv, Redirects(stdout, stderr)


def command_line(template: list[str], info: StreamInfo) -> tuple[list[str], Redirects]:
    # SRS splits an argument holding ">" (e.g. "-y>out.log") into the parts around it.
    parts: list[str] = []
    for arg in template:
        if ">" in arg and not arg.startswith(("1>", "2>", ">")):
            before, _, after = arg.partition(">")
            parts += [expand(before, info), ">", expand(after, info)]
        else:
            parts.append(expand(arg, info))
    return split_redirects(parts)


class ExecManager(ProcessRelay):
    kind = "exec"
    policy = RestartPolicy(initial=1.0, cap=30.0, max_failures=10)

    def wanted(self, info: StreamInfo, config: Config) -> list[Spec]:
        settings = config.vhost(info.vhost).exec
        if not settings.enabled:
            return []
        specs = []
        for i, template in enumerate(settings.publish):
            argv, redirects = command_line(template, info)
            if not argv:
                continue
            labels = (("vhost", info.vhost), ("app", info.app), ("stream", info.stream))
            specs.append(Spec(f"publish#{i + 1}", tuple(argv), redirects, labels, self.policy))
        return specs
