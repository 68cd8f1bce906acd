"""Command line: serve, config check, sign, and the signal helpers for preStop hooks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from tidecast import __version__

DEFAULT_CONFIGS = ("conf/srs.conf", "conf/tidecast.conf")

log = logging.getLogger("tidecast.server")


def _default_config() -> str:
    for path in DEFAULT_CONFIGS:
        if os.path.exists(path):
            return path
    return DEFAULT_CONFIGS[-1]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tidecast", description="Live-streaming server, drop-in for SRS.")
    p.add_argument("-v", "--version", action="version", version=f"tidecast {__version__}")
    sub = p.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the server (foreground unless the config says daemon on)")
    serve.add_argument("-c", "--config", help=f"config file (default: {' or '.join(DEFAULT_CONFIGS)})")
    serve.add_argument("-e", "--env-only", action="store_true", help="no file: defaults plus SRS_* variables")
    # Given by the supervisor of a `workers N` server to each worker it starts.
    # (the role itself, with the private ports' secret, comes in TIDECAST_WORKER_ROLE: argv is public).
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command")
    check = config_sub.add_parser("check", help="validate a config file and print the effective settings")
    check.add_argument("-c", "--config", help="config file")
    check.add_argument("-e", "--env-only", action="store_true")

    sign = sub.add_parser(
        "sign",
        help="print a signed publish or play URL (signed_url in a vhost)",
        description="Print a URL that a vhost with signed_url enabled admits until it expires.",
    )
    secret = sign.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret-file", metavar="FILE", help="file holding the vhost's secret (its secret_file)")
    secret.add_argument("--secret-env", metavar="VAR", help="environment variable holding the secret")
    action = sign.add_mutually_exclusive_group(required=True)
    action.add_argument("--publish", action="store_const", const="publish", dest="action", help="a publish URL")
    action.add_argument("--play", action="store_const", const="play", dest="action", help="a play URL")
    sign.add_argument("--app", required=True, help="the app, e.g. live")
    sign.add_argument("--stream", required=True, help="the stream name")
    sign.add_argument("--ttl", type=int, default=3600, help="seconds the URL stays valid (default 3600)")
    sign.add_argument("--ip", default="", help="the only client address the URL is good for")
    sign.add_argument("--vhost", default="__defaultVhost__", help="the vhost the URL is for (default __defaultVhost__)")
    sign.add_argument("--base", default="rtmp://127.0.0.1", help="scheme and host, e.g. rtmp://live.example.com")
    sign.add_argument(
        "--suffix", default=None, help="appended to the stream in the URL (default .flv for an http(s) play URL)"
    )
    sign.add_argument("--query", action="store_true", help="print only the query string, not the URL")

    for name, what in (
        ("grace", "graceful quit (SIGQUIT): drain, then exit; for preStop hooks"),
        ("reload", "reload the config (SIGHUP)"),
        ("stop", "fast quit (SIGTERM)"),
        ("reopen", "reopen log files (SIGUSR1)"),
    ):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("-c", "--config", help="config file, to find the pid file")
        cmd.add_argument("-p", "--pid-file", help="pid file of the running server")
    # Its options are its own (tidecast.status); listed here so `tidecast -h` shows it.
    sub.add_parser("status", help="readiness, versions, players and errors of endpoints, per track", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:
        from tidecast.status import main as status_main

        return status_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.config, args.env_only, args.worker)
    if args.command == "config" and args.config_command == "check":
        return _check(args.config, args.env_only)
    if args.command == "sign":
        return _sign(args)
    if args.command in ("grace", "reload", "stop", "reopen"):
        return _signal(args.command, args.config, args.pid_file)
    _parser().print_help()
    return 2


def _load(path: str | None, env_only: bool):  # type: ignore[no-untyped-def]
    from tidecast.config import load_config

    if env_only or os.environ.get("SRS_ENV_ONLY", "").lower() in ("on", "1", "true"):
        return load_config(None, env_only=True)
    return load_config(path or _default_config())


def _check(path: str | None, env_only: bool) -> int:
    from tidecast.config import ConfigError
    from tidecast.log import setup_logging

    setup_logging()
    try:
        config = _load(path, env_only)
    except ConfigError as exc:
        print(f"tidecast: config check failed: {exc}", file=sys.stderr)
        return 1
    print(config.dump())
    print(f"tidecast: the config file {config.path or '(env only)'} is ok", file=sys.stderr)
    return 0


def _sign(args: argparse.Namespace) -> int:
    import time

    from tidecast.access.signed import load_secret, sign_query
    from tidecast.config import ConfigError
    from tidecast.config.model import SignedUrl

    if args.ttl <= 0:
        print("tidecast sign: --ttl must be a positive number of seconds", file=sys.stderr)
        return 2
    settings = SignedUrl(enabled=True, secret_file=args.secret_file or "", secret_env=args.secret_env or "")
    try:
        secret = load_secret(settings, where="tidecast sign")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    expires = int(time.time()) + args.ttl
    query = sign_query(secret, args.action, args.app, args.stream, expires, args.ip, args.vhost)
    if args.query:
        print(f"?{query}")
    else:
        # HTTP plays are /app/stream.flv (or .m3u8); the signature covers the stream name only.
        suffix = args.suffix
        if suffix is None:
            suffix = ".flv" if args.action == "play" and args.base.startswith(("http://", "https://")) else ""
        print(f"{args.base.rstrip('/')}/{args.app}/{args.stream}{suffix}?{query}")
    return 0


def _signal(command: str, path: str | None, pid_file: str | None) -> int:
    signo = {
        "grace": signal.SIGQUIT,
        "reload": signal.SIGHUP,
        "stop": signal.SIGTERM,
        "reopen": signal.SIGUSR1,
    }[command]
    if pid_file is None:
        try:
            pid_file = _load(path, False).pid
        except Exception:
            pid_file = "./objs/srs.pid"
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as exc:
        print(f"tidecast {command}: cannot read the pid file {pid_file}: {exc}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        print(f"tidecast {command}: no process {pid} (stale pid file {pid_file})", file=sys.stderr)
        return 1
    print(f"tidecast {command}: sent {signal.Signals(signo).name} to {pid}")
    return 0


def _daemonize() -> None:
    """Classic double fork: the server detaches from the terminal that started it."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def _write_pid(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def _serve(path: str | None, env_only: bool, worker: int | None = None) -> int:
    from tidecast.config import ConfigError
    from tidecast.config.watch import in_container
    from tidecast.log import setup_logging
    from tidecast.multi.cpus import worker_count
    from tidecast.multi.role import ROLE_ENV, WorkerRole

    setup_logging()
    try:
        config = _load(path, env_only)
    except ConfigError as exc:
        log.error("config: %s", exc)
        return 1
    setup_logging(config.srs_log_tank, config.srs_log_level, config.srs_log_file, config.log_format)
    if worker is not None:
        # A worker: its supervisor detached, owns the pid file and passes the signals on.
        try:
            role = WorkerRole.from_json(os.environ.pop(ROLE_ENV, ""))
        except ValueError as exc:
            log.error("--worker %d: %s; workers are started by `tidecast serve` with `workers N`", worker, exc)
            return 2
        return _run_loop(config, role)
    workers = worker_count(config.workers)
    if config.daemon:
        if config.disable_daemon_for_docker and in_container(config):
            log.info("daemon off: running in a container (disable_daemon_for_docker)")
        else:
            if config.srs_log_tank != "file":
                log.info("daemon on: detaching; logs go nowhere unless srs_log_tank is file")
            _daemonize()
    _write_pid(config.pid)
    try:
        if workers > 1:
            from tidecast.multi.supervisor import Supervisor

            serve_args = ["-e"] if config.path is None else ["-c", os.path.abspath(config.path)]
            return Supervisor(workers, serve_args).run()
        return _run_loop(config, None)
    finally:
        try:
            with open(config.pid) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(config.pid)
        except OSError:
            pass


# Every media message allocates a few tracked objects, and a GOP cache keeps ~100 of them per stream: with
# CPython's default first threshold (700) the collector ran thousands of times a second under ingest
# (6 % of the server's samples at 300 publishers). Cycles are rare here; collecting young objects ten times
# less often costs at most ~10,000 objects' worth of memory before they are found.
# The second threshold bounds how many survivors one generation-1 collection walks, and so how long every
# connection waits: while players pour in (a reconnect storm) each one's objects survive, and at 20 a
# collection took up to 107 ms at 19,800 players; at 5 it takes up to 31 ms, for the same total time
# (docs/performance.md, "Stalls").
GC_THRESHOLDS = (10_000, 5, 20)


def _tune_gc() -> None:
    import gc

    gc.collect()
    gc.freeze()  # what start-up built (modules, config) lives as long as the process: never scan it again
    gc.set_threshold(*GC_THRESHOLDS)


def _run_loop(config, role) -> int:  # type: ignore[no-untyped-def]
    _tune_gc()
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_run(config, role))


async def _run(config, role=None) -> int:  # type: ignore[no-untyped-def]
    from tidecast.app import App

    server = App(config, role)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot start: %s (is another server on the port?)", exc)
        return 1
    return await server.run()


if __name__ == "__main__":
    raise SystemExit(main())
