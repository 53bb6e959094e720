#!/bin/sh
# Installs the peer hubs' npm packages (exact versions from package.json) outside the
# repository, into ${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-ws-peers, and checks that
# uWebSockets.js loads its native module. Idempotent: does nothing when the installed
# versions already match. Prints the directory to use as NODE_PATH's parent.
#
# The Go peer (gorilla_hub.go) is built there too, as gorilla_hub, when Go and gorilla's
# source are installed (Debian: apt-get install golang-go golang-github-gorilla-websocket-dev;
# built in GOPATH mode from /usr/share/gocode, nothing downloaded); otherwise it says so
# and ws-bench --peers runs without it. FN_WS_PEERS_APT=1 installs those two packages.
#
#   tools/ws_peers/install.sh
#   NODE_PATH="${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-ws-peers/node_modules" \
#       node tools/ws_peers/uws_hub.js --port 0
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-ws-peers"
mkdir -p "$dir"
if ! cmp -s "$here/package.json" "$dir/package.json" \
    || [ ! -f "$dir/node_modules/ws/package.json" ] \
    || [ ! -f "$dir/node_modules/@trufflesuite/uws-js-unofficial/package.json" ]; then
    cp "$here/package.json" "$dir/package.json"
    (cd "$dir" && npm install --silent --no-audit --no-fund --no-package-lock --omit=optional)
    echo "installed into $dir" >&2
fi
NODE_PATH="$dir/node_modules" node "$here/check.js"
gocode=/usr/share/gocode
if [ "${FN_WS_PEERS_APT:-}" = 1 ] && ! [ -d "$gocode/src/github.com/gorilla/websocket" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-gorilla-websocket-dev >&2
fi
if command -v go >/dev/null && [ -d "$gocode/src/github.com/gorilla/websocket" ]; then
    if ! cmp -s "$here/gorilla_hub.go" "$dir/gorilla_hub.go" || [ ! -x "$dir/gorilla_hub" ]; then
        cp "$here/gorilla_hub.go" "$dir/gorilla_hub.go"
        (cd "$dir" && GOPATH="$gocode" GO111MODULE=off GOFLAGS= go build -o gorilla_hub gorilla_hub.go) \
            && echo "built $dir/gorilla_hub ($(go version))" >&2 \
            || { rm -f "$dir/gorilla_hub"; echo "gorilla_hub: the Go build failed (see above)" >&2; }
    fi
else
    echo "gorilla_hub: not built (no Go or no gorilla source: apt-get install golang-go golang-github-gorilla-websocket-dev)" >&2
fi
echo "$dir"
