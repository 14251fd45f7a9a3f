# Shell helpers shared by the scripts: sourced, not run. The caller sets
# `me` (its name, for messages) first.

# Installs Debian packages with apt-get (as root, or with sudo); `java` stands for a Java 17+
# runtime. Fails saying what is missing when apt-get or the rights to run it are not there.
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$me: needs $*; install it (there is no apt-get here)" >&2
    exit 1
  fi
  local sudo=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "$me: needs $*; install it (apt-get needs root or sudo)" >&2
      exit 1
    }
    sudo=sudo
  fi
  $sudo apt-get update -qq >&2
  local pkgs=() pkg
  for pkg in "$@"; do
    if [ "$pkg" = java ]; then
      # Debian 12 has openjdk-17; later releases only newer ones, as default-jre-headless.
      if apt-cache show openjdk-17-jre-headless >/dev/null 2>&1; then
        pkg=openjdk-17-jre-headless
      else
        pkg=default-jre-headless
      fi
    fi
    pkgs+=("$pkg")
  done
  echo "$me: installing ${pkgs[*]} with apt-get" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
}

# Whether process $1 runs (a zombie nobody has reaped yet does not).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 0
  [ "$state" != Z ]
}

# Runs `SCRIPT stop DIR`, then removes DIR, once process OWNER is gone: a test binary never drops
# the server its tests share, and one killed mid-test drops nothing. A stop or restart by the
# owner removes DIR/PIDFILE, which ends this watch (a restart starts a new one).
#   watch_owner SCRIPT DIR PIDFILE OWNER
watch_owner() {
  local script=$1 dir=$2 pidfile=$3 owner=$4
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -f "$2/$4" ]; do sleep 1; done
    if ! kill -0 "$1" 2>/dev/null; then "$3" stop "$2"; rm -rf "$2"; fi' \
    _ "$owner" "$dir" "$script" "$pidfile" </dev/null >/dev/null 2>&1 &
}

java_major() {
  "$1" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -1
}

# Sets JAVA_CMD to a java 17 or newer: $JAVA, the one on PATH, or one under /usr/lib/jvm. Fails
# (exits) when $JAVA is set to something else; returns 1 when none is found.
find_java() {
  local c major
  if [ -n "${JAVA:-}" ]; then
    major=$(java_major "$JAVA" 2>/dev/null || true)
    if [ -z "$major" ] || [ "$major" -lt 17 ]; then
      echo "$me: JAVA=$JAVA is not a java 17 or newer (\`$JAVA -version\` fails or prints an older version); unset JAVA or point it at one" >&2
      exit 1
    fi
    JAVA_CMD=$JAVA; return 0
  fi
  for c in "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*/bin/java; do
    if [ -z "$c" ] || [ ! -x "$c" ]; then continue; fi
    major=$(java_major "$c")
    if [ -n "$major" ] && [ "$major" -ge 17 ]; then JAVA_CMD=$c; return 0; fi
  done
  return 1
}

# Free loopback TCP ports are picked at random below the kernel's ephemeral range
# (ip_local_port_range): outgoing connections take their local ports from that range, so a server
# stopped for a restart finds its port still free when it starts again.
PICK_PORTS_PY='
import random, socket, sys
def bindable(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except (OSError, ValueError, OverflowError):
        s.close()
        return None
    return s
def pick(held):
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(1000 if low > 11000 else 0):
        port = random.randrange(10000, low)
        if port not in held:
            s = bindable(port)
            if s:
                return s
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s
'

# A free loopback TCP port: the first of the ports given that is free, else one picked as above.
# Bound the way Jetty and PostgreSQL bind (SO_REUSEADDR), so a port whose connections are in
# TIME_WAIT counts as free and a restarted server gets its port back.
free_port() {
  python3 -c "$PICK_PORTS_PY"'
for p in sys.argv[1:]:
    try:
        s = bindable(int(p))
    except ValueError:
        s = None
    if s:
        break
else:
    s = pick(set())
print(s.getsockname()[1])
' "$@"
}

# N distinct free loopback ports, one a line (all held at once while picking, so none repeats).
free_ports() {
  python3 -c "$PICK_PORTS_PY"'
socks = []
for _ in range(int(sys.argv[1])):
    socks.append(pick({s.getsockname()[1] for s in socks}))
print("\n".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

# Prints the path of the Go program scripts/NAME (main.go, go.mod, go.sum), building it first
# with the Go toolchain (modules from the Go module proxy) into
# ${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-~/.cache}/sagaflow}/NAME-<hash of its source> unless it is
# there. Run from the repository root.
go_tool() {
  local name=$1 src=scripts/$1 cache hash bin
  command -v go >/dev/null 2>&1 \
    || { echo "$me: the Go toolchain is needed to build $name (https://go.dev/dl)" >&2; exit 1; }
  cache=${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sagaflow}
  mkdir -p "$cache" && cache=$(cd "$cache" && pwd)  # absolute: the build runs in $src
  hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
  bin=$cache/$name-$hash/$name
  if [ ! -x "$bin" ]; then
    echo "$me: building $name (Go modules from the module proxy, once)..." >&2
    mkdir -p "$(dirname "$bin")"
    # Explicit returns: set -e does not stop a function called inside $(...) or a condition.
    (cd "$src" && go build -mod=readonly -o "$bin.tmp$$" .) \
      || { rm -f "$bin.tmp$$"; echo "$me: go build of $src failed" >&2; return 1; }
    mv "$bin.tmp$$" "$bin" || return 1
  fi
  echo "$bin"
}
