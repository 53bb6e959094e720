#!/usr/bin/env bash
# The Autobahn TestSuite (wstest -m fuzzingclient) against rt-server's /echo,
# every case but compression (12.*, 13.*). Installs wstest on first use, outside
# the repository (Python 2.7 virtualenv, see ../../README.md), and fails on any
# case whose result is not OK, except the ones listed in allowed.txt with the
# result allowed there (what tokio-tungstenite itself gets).
#
#   tests/autobahn/run.sh target/debug/rt-server [REPORT_DIR]
set -euo pipefail
server_bin=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${2:-${TMPDIR:-/tmp}/fn-registry-autobahn}")
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-autobahn"
wstest="$cache/py27/bin/wstest"

if [ ! -x "$wstest" ]; then
    py27="${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python"
    if [ ! -x "$py27" ]; then
        echo "autobahn: Python 2.7.18 not found at $py27 (the suite needs Python 2)" >&2
        exit 1
    fi
    mkdir -p "$cache"
    python3 -m venv "$cache/venv3"
    "$cache/venv3/bin/pip" install -q 'virtualenv<20.22'
    "$cache/venv3/bin/virtualenv" -q -p "$py27" "$cache/py27"
    "$cache/py27/bin/pip" install -q autobahntestsuite==25.10.1
fi

rm -rf "$out"
mkdir -p "$out"
# The conformance testee takes any origin (wstest is no browser page).
"$server_bin" --addr 127.0.0.1:0 --quiet --allow-any-origin > "$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$out/server.log" && break; sleep 0.1; done
addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$out/server.log")
cat > "$out/spec.json" <<SPEC
{"outdir": "$out/reports", "servers": [{"agent": "rt-server", "url": "ws://$addr/echo"}],
 "cases": ["*"], "exclude-cases": ["12.*", "13.*"], "exclude-agent-cases": {}}
SPEC
(cd "$out" && "$wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1)
python3 "$here/check.py" "$out/reports/index.json" "$here/allowed.txt"
