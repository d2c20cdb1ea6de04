#!/usr/bin/env bash
# Smoke run of the real app in tmux: trains a toy model through the CLI (seconds),
# opens `ner-workbench tui` in a detached tmux session, drives it with send-keys
# and prints what each screen showed (capture-pane). Nothing is written to the repo.
#
#   scripts/tui_smoke.sh            # needs tmux and the venv (make install)
#   KEEP=1 scripts/tui_smoke.sh     # keep the scratch workspace
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$REPO/.venv/bin}"
WORK="$(mktemp -d)"
SESSION="nerwb-smoke-$$"
export TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

RPC_PIDS=()
cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    for pid in "${RPC_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # Jobs outlive the app by design: cancel any this smoke run started.
    for child in "$WORK"/runs/jobs/*/child.json; do
        [ -f "$child" ] && kill -TERM "$("$BIN/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['pid'])" "$child")" 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] && echo "workspace kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# A workspace of its own: a toy corpus, a config for it, and a copy of the quickstart config.
mkdir -p "$WORK/configs"
cp "$REPO/configs/quickstart.yaml" "$WORK/configs/"
"$BIN/python" -c "
import sys; sys.path.insert(0, '$REPO/tests')
from conftest import write_toy_corpus
write_toy_corpus('$WORK/toy.txt')
open('$WORK/configs/toy.yaml', 'w').write('''name: toy
stages: [train, export, eval]
data: {source: conll, train: $WORK/toy.txt, dev: $WORK/toy.txt, test: $WORK/toy.txt}
model: {preset: tiny, max_length: 16, dropout: 0.0}
train: {epochs: 40, batch_size: 8, learning_rate: 3.0e-3, warmup_ratio: 0.1}
export: {shape: [1, 16], parity_sentences: 8}
''')
"
# A TVM RPC tracker with one device of key "smoke", for the Devices screen.
free_port() { "$BIN/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
TRACKER_PORT=$(free_port); SERVER_PORT=$(free_port)
"$BIN/python" -m tvm.exec.rpc_tracker --host 127.0.0.1 --port "$TRACKER_PORT" --port-end $((TRACKER_PORT + 1)) >"$WORK/tracker.log" 2>&1 &
RPC_PIDS+=($!)
sleep 2
"$BIN/python" -m tvm.exec.rpc_server --tracker "127.0.0.1:$TRACKER_PORT" --key smoke --host 127.0.0.1 \
    --port "$SERVER_PORT" --port-end $((SERVER_PORT + 1)) >"$WORK/server.log" 2>&1 &
RPC_PIDS+=($!)
echo "== training a toy model through the CLI =="
(cd "$WORK" && "$BIN/ner-workbench" run configs/toy.yaml --runs-dir "$WORK/runs" --quiet | tail -n 3)

show() {  # show TITLE: print the pane as a user sees it
    echo
    echo "=================== $1 ==================="
    tmux capture-pane -p -t "$SESSION" | sed -e 's/[[:space:]]*$//'
}
keys() { tmux send-keys -t "$SESSION" "$@"; }
wait_for() {  # wait_for TEXT [SECONDS]: until the pane shows TEXT
    local deadline=$((SECONDS + ${2:-20}))
    until tmux capture-pane -p -t "$SESSION" | grep -qF -- "$1"; do
        if [ $SECONDS -ge $deadline ]; then echo "!! timed out waiting for: $1"; show "at timeout"; exit 1; fi
        sleep 0.2
    done
}

deadline=$((SECONDS + 60))   # the device registers with the tracker while the toy model trains
until "$BIN/ner-workbench" devices --rpc "127.0.0.1:$TRACKER_PORT" 2>/dev/null | grep -q smoke; do
    if [ $SECONDS -ge $deadline ]; then echo "!! the RPC device never registered"; cat "$WORK/tracker.log" "$WORK/server.log"; exit 1; fi
    sleep 0.5
done
echo "== starting: ner-workbench tui --runs-dir $WORK/runs (tmux, 140x40) =="
START=$(date +%s.%N)
tmux new-session -d -s "$SESSION" -x 140 -y 40 -c "$WORK" \
    "TERM=xterm-256color '$BIN/ner-workbench' tui --runs-dir '$WORK/runs'; echo APP-EXITED-\$?; sleep 30"
wait_for "toy" 20
echo "run list on screen $("$BIN/python" -c "print(round($(date +%s.%N) - $START, 2))") s after tmux started the app"
show "Runs (home)"

keys Enter; wait_for "Artifacts"; sleep 0.5
show "Run detail (enter)"

keys Escape; keys F5; wait_for "ready" 60
keys -l "张三在北京工作。李四去了广州"
wait_for "ms/sentence" 20; sleep 0.5
show "Highlighter: typed 张三在北京工作。李四去了广州"

keys C-l; keys -l "🙂 Hello 张三 ${RANDOM}"; sleep 1
show "Highlighter: emoji + Latin"

keys F3; wait_for "valid config" 20
keys -l "bogus: 1"; keys Enter; wait_for "unknown key" 10
show "Config editor: typed an unknown key"
keys C-s; sleep 0.5
show "Config editor: ctrl+s on an invalid config (refused)"
keys C-z; sleep 0.2

keys F4; wait_for "Launch" 10
keys Down Down Down; sleep 0.5          # run → train → export → eval; the target list becomes the runs
keys l; wait_for "elapsed" 10
wait_for "done · elapsed" 90; sleep 1
show "Jobs: an eval job launched with l, followed to the end"

keys F6; wait_for "eval sent/s" 10; sleep 0.5
show "Compare"

keys F7; wait_for "HOST:PORT" 10
keys -l "127.0.0.1:$(free_port)"; keys Enter; wait_for "unreachable" 10; sleep 0.3
show "Devices (F7): a port where no tracker listens"
keys C-u; keys -l "127.0.0.1:$TRACKER_PORT"; keys Enter; wait_for "1 device(s), 1 free" 20; sleep 0.3
show "Devices (F7): a tracker with one device of key smoke"

keys F1; wait_for "keys" 5; sleep 0.3
show "Help (F1)"
keys Escape

keys C-q; wait_for "APP-EXITED-" 10
show "after ctrl+q"
tmux capture-pane -p -t "$SESSION" | grep -q "APP-EXITED-0" && echo "smoke: OK (the app exited with 0)"
