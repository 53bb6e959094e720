#!/bin/sh
# Installs the peer hubs' npm packages (exact versions from package.json) outside the
# repository, into ${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-ws-peers, and checks that
# uWebSockets.js loads its native module. Idempotent: does nothing when the installed
# versions already match. Prints the directory to use as NODE_PATH's parent.
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
echo "$dir"
