# The functions of scripts/compose-check.sh, which sources this file (it is not run by itself):
# the step log and die, compose with the check's override, stopping processes by PID, the
# private dockerd (start_daemon, daemon_pid) and the EXIT trap's teardown. They read the
# script's settings (REPO, WORK, LOGS, SOCK, DOCKER, COMPOSE_BIN, KEEP, HTTP_PID, T0, TSTEP).

step() {   # step MESSAGE: "[compose-check  +123s] MESSAGE (previous step: 12 s)"
    local now; now=$(date +%s)
    printf '[compose-check %+5ds] %s   (previous step %d s)\n' $(( now - T0 )) "$*" $(( now - TSTEP ))
    TSTEP=$now
}
die() { echo "compose-check: FAILED: $*" >&2; exit 1; }

compose() { "$COMPOSE_BIN" -f "$REPO/docker-compose.yml" -f "$REPO/deploy/compose.check.yml" "$@"; }

# --------------------------------------------------------------------------- teardown
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
stop_pid() {   # stop_pid PID [SECONDS]: TERM, wait, then KILL
    local pid=$1 wait=${2:-30} i
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait * 10; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
daemon_pid() {   # the PID of the dockerd this script started (its pidfile), if it still runs
    local pid
    pid=$(cat "$WORK/dockerd.pid" 2>/dev/null) || return 0
    if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--data-root $WORK/data"; then
        echo "$pid"
    fi
}
teardown() {
    local rc=$?
    set +e
    if [ "$KEEP" = 1 ] && [ "$rc" = 0 ]; then
        echo "compose-check: left running (DOCKER_HOST=$DOCKER_HOST); tear down with: scripts/compose-check.sh --down"
        pid_alive "$HTTP_PID" && stop_pid "$HTTP_PID" 5
        return
    fi
    step "teardown: containers, volumes, images, daemon"
    pid_alive "$HTTP_PID" && stop_pid "$HTTP_PID" 5
    local pid; pid=$(daemon_pid)
    if [ -n "$pid" ]; then
        if [ -n "$COMPOSE_BIN" ]; then
            compose down --volumes --remove-orphans --timeout 20 >>"$LOGS/compose-down.log" 2>&1 \
                || echo "compose-check: compose down failed (log: $LOGS/compose-down.log)" >&2
        fi
        # what compose does not own: the images this script built (large), stray containers
        $DOCKER ps -aq | xargs -r $DOCKER rm -f >/dev/null 2>&1
        $DOCKER image rm -f esgd:latest esgd-prometheus:latest esgd-base:bookworm esgd-rootfs:bookworm >/dev/null 2>&1
        $DOCKER volume prune -f >/dev/null 2>&1
        stop_pid "$pid" 60
    fi
    # the daemon's containerd and any container shim left behind: by PID, only those of $WORK
    pid=$(cat "$WORK/exec/containerd/containerd.pid" 2>/dev/null) && stop_pid "$pid" 20
    for p in /proc/[0-9]*; do
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "$WORK/exec" && stop_pid "${p#/proc/}" 10
    done
    # mounts the daemon left (overlay layers, container /dev/shm), deepest first
    awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    rm -rf "$WORK/data" "$WORK/exec" "$WORK/pkgsrv" "$WORK/base-context" "$SOCK" "$WORK/dockerd.pid" \
        "$WORK/job.yaml" "$WORK/job.json" "$WORK/nodes.json" "$WORK/prometheus.yml"
    step "done: exit $rc (logs in $LOGS)"
}

# --------------------------------------------------------------------------- dockerd
start_daemon() {   # start_daemon DRIVER: 0 when it answers within 60 s with that driver
    step "dockerd: own socket $SOCK, data root $WORK/data, --iptables=false --bridge=none, storage $1"
    /usr/sbin/dockerd --host "unix://$SOCK" --data-root "$WORK/data" --exec-root "$WORK/exec" \
        --pidfile "$WORK/dockerd.pid" --iptables=false --ip6tables=false --bridge=none --ip-forward=false \
        --ip-masq=false --userland-proxy=false --storage-driver="$1" >"$LOGS/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    local i
    for ((i = 0; i < 60; i++)); do
        pid_alive "$DOCKERD_PID" || return 1
        if [ "$($DOCKER info --format '{{.Driver}}' 2>/dev/null)" = "$1" ]; then
            # the driver really works: a container's root filesystem on it
            return 0
        fi
        sleep 1
    done
    return 1
}
