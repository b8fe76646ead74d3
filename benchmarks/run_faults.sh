#!/bin/bash
# The faults a user meets, rerun on the quickstart (flags/quickstart.flags, budget ε = 3): each must
# end with an honest ε or refuse in one line. Prints what each command printed last and the steps
# and ε its run reports; an uninterrupted run ends at 180 steps, ε = 2.972.
#
#   bash benchmarks/run_faults.sh [work dir]      # About 5 minutes on 2 cores.
#
# Kills and a full disk are injected by a wrapper around tfdp.train's main (python -c below), at
# the named write; everything else is the plain command. tests/test_run_faults.py and
# tests/test_run_state.py check the same faults with assertions.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
D=${1:-$(mktemp -d)}
mkdir -p "$D"
q() { echo "--flagfile=flags/quickstart.flags --output_dir=$D/$1 --export_dir=$D/$1-export"; }
steps() { $PY -c "import json; m = json.load(open('$D/$1/metrics.json')); print('  reported:', m['steps'], 'steps, ε =', round(m['epsilon'], 3))"; }
last() { echo "  rc=$1: $(tail -1 "$2" | cut -c1-300)"; }
temporaries() { echo "  temporaries left: $(find "$@" -name '.tmp-*' -o -name '*_temp' -o -name 'checkpoint.tmp*' -o -name '*.old' | wc -l)"; }
# Runs tfdp.train, SIGKILLed just before the state.json that records epoch $1.
kill_at() {
  local epoch=$1; shift
  $PY -c "
import json, os, signal, sys
from absl import app
from tfdp import atomic, train
write_text = atomic.write_text
def killing(path, text):
  if path.endswith('/state.json') and json.loads(text)['epoch'] == $epoch:
    os.kill(os.getpid(), signal.SIGKILL)
  write_text(path, text)
atomic.write_text = killing
sys.argv[0] = 'tfdp.train'
app.run(train.main)" "$@"
}

echo "1. Two identical commands at once"
$PY -m tfdp.train $(q f1) > "$D/f1a.log" 2>&1 & first=$!
$PY -m tfdp.train $(q f1) > "$D/f1b.log" 2>&1; second=$?
wait $first; last $? "$D/f1a.log"; last $second "$D/f1b.log"  # Either may win the lock.
steps f1; echo "  export versions: $(ls "$D/f1-export" | grep -c '^[0-9]')"

echo "2. SIGKILL between epoch 8's checkpoint and its state.json, then the same command"
kill_at 8 $(q f2) > /dev/null 2>&1
$PY -c "import json; print('  state.json epoch', json.load(open('$D/f2/state.json'))['epoch'], '; spent.json steps', json.load(open('$D/f2/spent.json'))['steps'])"
$PY -m tfdp.train $(q f2) > "$D/f2.log" 2>&1; grep -E "counts .* steps after|Stopped after" "$D/f2.log" | sed 's/^/  /'; steps f2

echo "3. state.json deleted after 6 epochs"
kill_at 7 $(q f3) > /dev/null 2>&1; rm "$D/f3/state.json"
$PY -m tfdp.train $(q f3) > "$D/f3.log" 2>&1; last $? "$D/f3.log"

echo "4. state.json's ledger.steps lowered from 72 to 12, then removed"
kill_at 7 $(q f4) > /dev/null 2>&1; cp "$D/f4/state.json" "$D/f4-state.json"
$PY -c "import json; p = '$D/f4/state.json'; s = json.load(open(p)); s['ledger']['steps'] = 12; json.dump(s, open(p, 'w'))"
$PY -m tfdp.train $(q f4) > "$D/f4a.log" 2>&1; last $? "$D/f4a.log"
$PY -c "import json; s = json.load(open('$D/f4-state.json')); del s['ledger']['steps']; json.dump(s, open('$D/f4/state.json', 'w'))"
$PY -m tfdp.train $(q f4) > "$D/f4b.log" 2>&1; last $? "$D/f4b.log"

echo "5. Temporaries a kill left; a full disk; a finished run run again"
kill_at 3 $(q f5) > /dev/null 2>&1
mkdir -p "$D/f5/.tmp-saved_modelab/variables" "$D/f5/checkpoints/ckpt-9_temp" "$D/f5-export/.tmp-2cd"
touch "$D/f5/.tmp-state.jsonx" "$D/f5/checkpoints/checkpoint.tmp1234" "$D/f5/.tmp-spent.jsonz"
$PY -m tfdp.train $(q f5) > "$D/f5a.log" 2>&1; grep "Removed" "$D/f5a.log" | sed 's/^/  /'
temporaries "$D/f5" "$D/f5-export"; steps f5
$PY -m tfdp.train $(q f5) > "$D/f5b.log" 2>&1; echo "  rerun: $(grep 'finished run' "$D/f5b.log" | cut -c1-120)"
echo "  export versions: $(ls "$D/f5-export" | grep -c '^[0-9]')"
$PY -c "
import errno, os, sys
from absl import app
from tfdp import atomic, train
class FullDisk:  # The 4th state.json finds the disk full.
  writes = 0
  def replace(self, source, destination):
    if destination.endswith('state.json'):
      FullDisk.writes += 1
      if FullDisk.writes == 4:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), destination)
    os.replace(source, destination)
  def __getattr__(self, name):
    return getattr(os, name)
atomic.os = FullDisk()
sys.argv[0] = 'tfdp.train'
app.run(train.main)" $(q f5d) > "$D/f5d.log" 2>&1; last $? "$D/f5d.log"; temporaries "$D/f5d"
$PY -m tfdp.train $(q f5d) > /dev/null 2>&1; steps f5d

echo "6. A truncated state.json; SIGTERM; SIGINT"
kill_at 4 $(q f6) > /dev/null 2>&1; head -c 100 "$D/f6/state.json" > "$D/x"; mv "$D/x" "$D/f6/state.json"
$PY -m tfdp.train $(q f6) > "$D/f6.log" 2>&1; last $? "$D/f6.log"
for sig in TERM INT; do
  $PY -m tfdp.train $(q "f6$sig") > "$D/f6$sig.log" 2>&1 & pid=$!
  while ! grep -q "^Epoch 5/" "$D/f6$sig.log" 2>/dev/null; do sleep 0.05; done
  kill -$sig $pid; wait $pid; last $? "$D/f6$sig.log"
  $PY -m tfdp.train $(q "f6$sig") > /dev/null 2>&1; steps "f6$sig"
done
echo "Work directory: $D"
