#!/bin/sh
# Install tidecast into PREFIX with the file layout of the SRS images, so
# manifests written for ossrs/srs need only a new image:
#
#   PREFIX/usr/local/tidecast/               virtualenv holding the tidecast package
#   PREFIX/usr/local/bin/tidecast            launcher (`tidecast serve|config check|grace|...`)
#   PREFIX/usr/local/srs/conf/srs.conf       default config (a ConfigMap is mounted over conf/)
#   PREFIX/usr/local/srs/objs/               pid file, logs; objs/srs is an SRS-style shim
#   PREFIX/usr/local/srs/objs/nginx/html/    http_server dir and default hls_path
#   PREFIX/usr/local/srs/etc/init.d/srs      start|stop|restart|reload|grace|status
#
# The Dockerfile runs this script with PREFIX=/; tests/test_deploy.py runs it
# into a temporary root and starts the installed server from there.
#
# Usage: deploy/install.sh PREFIX [SOURCE_DIR]
# Environment:
#   PYTHON=python3          interpreter to build the virtualenv from
#   TIDECAST_SYSTEM_SITE=1  virtualenv with --system-site-packages: dependencies
#                           the interpreter already has are reused, not downloaded
#                           (the tests use this; the image does not)
#   TIDECAST_COMPILE=1      compile the per-message path with mypyc (setup.py); needs
#                           a C compiler and the Python headers (the image does this)
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 PREFIX [SOURCE_DIR]" >&2
    exit 2
fi
PREFIX=${1%/}
SRC=${2:-$(cd "$(dirname "$0")/.." && pwd)}
PYTHON=${PYTHON:-python3}

VENV=$PREFIX/usr/local/tidecast
BIN=$PREFIX/usr/local/bin
SRS_HOME=$PREFIX/usr/local/srs

echo "tidecast install: $SRC -> ${PREFIX:-/}"
mkdir -p "$BIN" "$SRS_HOME/conf" "$SRS_HOME/objs/nginx/html" "$SRS_HOME/etc/init.d"

# 1. The package, in its own virtualenv.
# The interpreter's own pip installs into the virtualenv (pip --python), so
# the virtualenv needs no pip of its own.
if [ "${TIDECAST_SYSTEM_SITE:-}" = 1 ]; then
    "$PYTHON" -m venv --without-pip --system-site-packages "$VENV"
else
    "$PYTHON" -m venv --without-pip "$VENV"
fi
"$PYTHON" -m pip --python "$VENV/bin/python" install -q --disable-pip-version-check \
    --no-cache-dir "$SRC"

# 2. The launcher. It finds the virtualenv relative to itself, so the tree can
#    be built in one place and copied to another (Docker multi-stage build).
cat >"$BIN/tidecast" <<'EOF'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
exec "$here/../tidecast/bin/python" -m tidecast "$@"
EOF
chmod 0755 "$BIN/tidecast"

# 3. SRS layout: default config, html dir, objs/srs shim, init.d script.
if [ ! -f "$SRS_HOME/conf/srs.conf" ]; then
    cat >"$SRS_HOME/conf/srs.conf" <<'EOF'
# tidecast default config (SRS syntax). In Kubernetes a ConfigMap is mounted
# over /usr/local/srs/conf; see docs/kubernetes.md.
listen              1935;
max_connections     1000;
daemon              off;
srs_log_tank        console;
http_api {
    enabled         on;
    listen          1985;
}
http_server {
    enabled         on;
    listen          8080;
    dir             ./objs/nginx/html;
}
vhost __defaultVhost__ {
    hls {
        enabled         on;
    }
    http_remux {
        enabled     on;
        mount       [vhost]/[app]/[stream].flv;
    }
}
EOF
fi

# SRS images are driven with `./objs/srs -c conf/srs.conf`, `./objs/srs -v`
# and `./objs/srs -t -c conf/srs.conf`; keep those working.
cat >"$SRS_HOME/objs/srs" <<'EOF'
#!/bin/sh
# SRS-compatible entry point: -c FILE (serve), -t (test config), -v (version).
tidecast=$(dirname "$(readlink -f "$0")")/../../bin/tidecast
[ -x "$tidecast" ] || tidecast=tidecast
config=""
test_only=""
while [ $# -gt 0 ]; do
    case "$1" in
        -c) config=$2; shift 2 ;;
        -t) test_only=1; shift ;;
        -v|-V|--version) exec "$tidecast" --version ;;
        -e) exec "$tidecast" serve --env-only ;;
        *) echo "srs (tidecast): unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -n "$test_only" ]; then
    exec "$tidecast" config check ${config:+-c "$config"}
fi
exec "$tidecast" serve ${config:+-c "$config"}
EOF
chmod 0755 "$SRS_HOME/objs/srs"

cat >"$SRS_HOME/etc/init.d/srs" <<'EOF'
#!/bin/sh
# tidecast control script, at the path SRS images use, so that Kubernetes
# preStop hooks such as ["/usr/local/srs/etc/init.d/srs", "grace"] keep working.
#   start    run the server in the background (the container entrypoint runs it in the foreground)
#   stop     fast quit (SIGTERM), wait for the process to exit
#   restart  stop, then start
#   reload   reload the config (SIGHUP)
#   grace    graceful quit (SIGQUIT): keep accepting for grace_start_wait, then drain
#   status   exit 0 if the process in the pid file is running
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
cd "$ROOT" || exit 1
CONFIG=${CONFIG:-./conf/srs.conf}
TIDECAST=${TIDECAST:-$ROOT/../bin/tidecast}
[ -x "$TIDECAST" ] || TIDECAST=tidecast

pid_file() {
    # The `pid` directive of the config, else SRS's default ./objs/srs.pid.
    f=$(sed -n 's/^[[:space:]]*pid[[:space:]][[:space:]]*\([^;[:space:]]*\)[[:space:]]*;.*/\1/p' "$CONFIG" 2>/dev/null | head -n 1)
    echo "${f:-./objs/srs.pid}"
}

running_pid() {
    f=$(pid_file)
    [ -f "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

case "${1:-}" in
    start)
        if pid=$(running_pid); then
            echo "tidecast is already running, pid $pid"
            exit 0
        fi
        mkdir -p ./objs
        nohup "$TIDECAST" serve -c "$CONFIG" >>./objs/srs.console.log 2>&1 &
        echo "tidecast started, pid $!"
        ;;
    stop)
        pid=$(running_pid) || { echo "tidecast is not running"; exit 0; }
        kill -TERM "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
        if kill -0 "$pid" 2>/dev/null; then
            echo "tidecast pid $pid did not stop" >&2
            exit 1
        fi
        echo "tidecast stopped"
        ;;
    restart)
        "$0" stop && "$0" start
        ;;
    reload)
        exec "$TIDECAST" reload -c "$CONFIG" -p "$(pid_file)"
        ;;
    grace)
        exec "$TIDECAST" grace -c "$CONFIG" -p "$(pid_file)"
        ;;
    status)
        if pid=$(running_pid); then
            echo "tidecast is running, pid $pid"
            exit 0
        fi
        echo "tidecast is stopped"
        exit 3
        ;;
    *)
        echo "usage: $0 {start|stop|restart|reload|grace|status}" >&2
        exit 2
        ;;
esac
EOF
chmod 0755 "$SRS_HOME/etc/init.d/srs"

echo "tidecast installed: $BIN/tidecast, $SRS_HOME"
