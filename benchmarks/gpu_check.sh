#!/usr/bin/env bash
# Everything issue 6 asks to measure on a GPU, as one call of the device tool. Planned for about
# 6 minutes there (never run on a GPU yet; a CPU rehearsal takes 1.5 minutes); each part has its
# own time limit, so a failing part cannot eat the rest.
#
#   bash benchmarks/gpu_prepare.sh    # here, first: wheels and data into the ignored .gpu/
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=540)
#
# It writes $OUT/gpu_check.log (everything), $OUT/summary.txt (the figures, one per line) and
# $OUT/dmon.txt (GPU utilisation and memory each second during parts 2 to 4).
# Parts: 1. the CUDA tests (correctness, host synchronisations, CUDA graphs); 2. reference
# trials per hour from the trainer alone with 1-16 processes sharing the GPU, eager and with
# CUDA graphs; 3. end to end: hpo create + 8 `hpo worker` processes on one SQLite study with
# device = "cuda"; 4. part 2 again under CUDA MPS, last because it is the likeliest to fail.
# All parts together stop by GPU_CHECK_BUDGET seconds (default 480), whatever happens.
# A rehearsal on a machine without a GPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}
quick=${GPU_CHECK_QUICK:+--quick}
counts=${GPU_CHECK_WORKERS:-1,4,8,16}
summary=$out/summary.txt
: >"$summary"
deadline=$((SECONDS + ${GPU_CHECK_BUDGET:-480}))
part() { echo; echo "== $* ($(date +%T), ${SECONDS}s)"; }
limit() {  # seconds for a part: at most $1, never past the deadline
  local left=$((deadline - SECONDS))
  echo $(($1 < left ? $1 : (left > 1 ? left : 1)))
}

if [ -d .gpu/whl ]; then  # the GPU image has no Optuna or SQLAlchemy (benchmarks/gpu_prepare.sh)
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/hpo-site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/hpo-site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -z "${HPO_DATA_DIR:-}" ]; then  # hpo decompresses the .gz files: outside .gpu, which travels
  rm -rf /tmp/hpo-data && cp -r .gpu/data /tmp/hpo-data && export HPO_DATA_DIR=/tmp/hpo-data
fi

part "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
$py - <<'EOF' | tee -a "$summary"
import os, torch, optuna
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"env: torch {torch.__version__} cuda {torch.version.cuda} optuna {optuna.__version__} "
      f"gpu {gpu!r} cpus {os.cpu_count()}")
EOF

part "1. CUDA tests: CPU parity, no per-step sync, CUDA graph = eager, fresh dropout masks"
timeout "$(limit 120)" $py -m pytest -q -p no:cacheprovider tests/test_trainer.py -k "cuda" -rs
echo "cuda_tests_exit=$?" | tee -a "$summary"

monitor() {  # GPU utilisation and memory every second, appended to dmon.txt
  echo "# $1" >>"$out/dmon.txt"
  nvidia-smi dmon -s um -d 1 >>"$out/dmon.txt" 2>/dev/null &
  dmon=$!
}
stop_monitor() { kill "$dmon" 2>/dev/null; wait "$dmon" 2>/dev/null; }
throughput() {  # name, seconds, extra args...
  local name=$1 seconds=$2 log
  shift 2
  part "2. trainer throughput: $name"
  log=$(mktemp)
  monitor "$name"
  timeout "$(limit "$seconds")" $py -m benchmarks.throughput --device "$device" \
    --workers "$counts" --trials 2 $quick "$@" | tee "$log"
  stop_monitor
  grep -h "trials/hour\|trials_per_hour" "$log" | sed "s/^/$name: /" >>"$summary"
}
throughput eager 150
throughput graph 150 --cuda-graph

part "3. end to end: hpo create + 8 hpo workers, one SQLite study, reference trials on $device"
work=$(mktemp -d)
n_trials=${GPU_CHECK_TRIALS:-48}
epochs=10
[ -n "$quick" ] && { n_trials=4; epochs=1; }
cat >"$work/gpu.toml" <<EOF
[study]
name = "gpu_reference"
metric = "val_accuracy"
storage = "sqlite:///$work/gpu.db"

[budget]
n_trials = $n_trials

[sampler]
name = "random"
seed = 0

[pruner]
name = "none"

[train]
device = "$device"

[space]  # the reference trial (784-256-256-10, Adam, batch 64), over a range of learning rates
depth = 2
units = 256
batch_size = 64
optimizer = "adam"
lr = { low = 1e-4, high = 1e-2, log = true }
epochs = $epochs
EOF
$py -m hpo create "$work/gpu.toml"
start=$(date +%s.%N)
monitor e2e
pids=()
seconds=$(limit 120)
for i in $(seq 8); do
  timeout "$seconds" $py -m hpo worker "$work/gpu.toml" --threads 1 >"$work/worker-$i.log" 2>&1 &
  pids+=($!)
done
codes=()
for p in "${pids[@]}"; do
  wait "$p"
  codes+=($?)
done
end=$(date +%s.%N)
stop_monitor
tail -n 3 "$work/worker-1.log"
$py - "$work/gpu.toml" "$start" "$end" "${codes[*]}" <<'EOF' | tee -a "$summary"
import statistics, sys
import optuna
from hpo.config.spec import load_spec
from hpo.coord.storage import open_storage
spec = load_spec(sys.argv[1])
study = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage, create=False))
done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
if not done:
    sys.exit(f"e2e: no complete trial of {len(study.trials)}; exit codes {sys.argv[4]}")
wall = float(sys.argv[3]) - float(sys.argv[2])
steady = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
train = statistics.median(t.user_attrs["train_seconds"] for t in done)
devices = sorted({t.user_attrs["device"] for t in done})
print(f"e2e: {len(done)} complete of {len(study.trials)} trials, 8 workers, exit codes "
      f"{sys.argv[4]}; {len(done) / wall * 3600:.0f} trials/hour from start to exit, "
      f"{len(done) / steady.total_seconds() * 3600:.0f} from first start to last end; "
      f"median train_seconds {train:.2f}; devices {devices}; "
      f"best val_accuracy {study.best_value:.4f}")
EOF

if [ "$device" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
  part "4. part 2 under CUDA MPS (kernels of different processes may overlap)"
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    counts=8,16 throughput mps-eager 60
    counts=8,16 throughput mps-graph 60 --cuda-graph
    echo quit | nvidia-cuda-mps-control
  else
    echo "mps: could not start the daemon" | tee -a "$summary"
  fi
fi

part "summary"
cat "$summary"
