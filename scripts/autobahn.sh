#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn|Testsuite fuzzing client against `wsedge echo` and
# compares every case's verdict with scripts/autobahn-expected.json. Exit 1 on any regression.
# Needs Python 2.7 (the suite is Python 2 code): pyenv's 2.7 or `python2.7` on PATH.
# Installs the suite under ${AUTOBAHN_HOME:-$HOME/.cache/wsedge-autobahn}. Bounded: ~2 minutes.
#   scripts/autobahn.sh [CASES]     (default "*"; compression cases 12.* and 13.* are excluded)
#   COMPRESSION=on scripts/autobahn.sh ["12.*"]   (the server with --compression on; all cases,
#                                                  12.* and 13.* included; about 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${1:-*}
COMPRESSION=${COMPRESSION:-off}
EXCLUDE='"12.*", "13.*"'
SERVER_FLAGS=()
if [ "$COMPRESSION" = on ]; then
  EXCLUDE=''
  SERVER_FLAGS=(--compression on --compression-min-size 0)
fi
PORT=${PORT:-19001}
HOME_DIR=${AUTOBAHN_HOME:-$HOME/.cache/wsedge-autobahn}
PY=""
for cand in python2.7 "$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python" /root/.pyenv/versions/2.7.18/bin/python; do
  if [ -n "$cand" ] && "$cand" -c 'import sys; sys.exit(sys.version_info[0] != 2)' >/dev/null 2>&1; then
    PY=$cand; break
  fi
done
[ -n "$PY" ] || { echo "autobahn.sh: Python 2.7 not found (install it with pyenv)"; exit 2; }
export PYTHONUSERBASE="$HOME_DIR"
if [ ! -x "$HOME_DIR/bin/wstest" ]; then
  "$PY" -m pip install -q --user --disable-pip-version-check autobahntestsuite 2>&1 | grep -v DEPRECATION || true
fi
cargo build --release --quiet --bin wsedge
OUT=$(mktemp -d)
./target/release/wsedge echo --listen "127.0.0.1:$PORT" --workers 1 --log-level warn "${SERVER_FLAGS[@]}" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$OUT"' EXIT
sleep 0.3
cat > "$OUT/fuzzingclient.json" <<JSON
{"outdir": "$OUT/reports", "servers": [{"agent": "wsedge", "url": "ws://127.0.0.1:$PORT"}],
 "cases": ["$CASES"], "exclude-cases": [$EXCLUDE], "exclude-agent-cases": {}}
JSON
(cd "$OUT" && timeout 1500 "$PY" "$HOME_DIR/bin/wstest" -m fuzzingclient -s fuzzingclient.json >/dev/null 2>&1)
python3 - "$OUT/reports/index.json" scripts/autobahn-expected.json <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))["wsedge"]
expected = json.load(open(sys.argv[2]))
rank = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1, "UNIMPLEMENTED": 2, "WRONG CODE": 3, "UNCLEAN": 3, "FAILED": 4}
bad = []
counts = {}
for case, r in sorted(got.items()):
    verdict = (r["behavior"], r["behaviorClose"])
    counts[verdict] = counts.get(verdict, 0) + 1
    want = tuple(expected.get(case, ["OK", "OK"]))
    if any(rank.get(g, 5) > rank.get(w, 5) for g, w in zip(verdict, want)):
        bad.append(f"{case}: got {verdict}, expected {want}")
print(f"autobahn: {len(got)} cases; " + ", ".join(f"{b}/{c}: {n}" for (b, c), n in sorted(counts.items())))
for line in bad:
    print("REGRESSION", line)
sys.exit(1 if bad else 0)
PY
