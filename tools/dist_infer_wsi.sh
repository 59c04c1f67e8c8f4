#!/usr/bin/env bash
# Whole-slide inference of many slides on many GPUs: torchrun starts GPUS ranks of
# tools/infer_wsi.py (--launcher pytorch); each rank infers its share of the slides and
# rank 0 writes DIR/run_summary.json for all of them. Rerunning resumes every slide.
#   bash tools/dist_infer_wsi.sh PIPELINE_CONFIG PIPELINE_WORK_DIR SLIDE [SLIDE ...] GPUS \
#       --out DIR [infer_wsi.py options]
# With --device cpu the ranks are CPU processes (gloo). Several nodes: NNODES, NODE_RANK,
# MASTER_ADDR, PORT as for tools/dist_train.sh; PYTHON picks the interpreter.
set -euo pipefail
positional=()
while [[ $# -gt 0 && $1 != --* ]]; do
    positional+=("$1")
    shift
done
if (( ${#positional[@]} < 4 )); then
    echo "usage: $0 PIPELINE_CONFIG PIPELINE_WORK_DIR SLIDE [SLIDE ...] GPUS --out DIR" \
         "[infer_wsi.py options]" >&2
    exit 2
fi
GPUS=${positional[-1]}
if ! [[ $GPUS =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: GPUS (the last argument before the options) must be a positive integer," \
         "got '$GPUS'" >&2
    exit 2
fi
unset 'positional[-1]'
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
"${PYTHON:-python}" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$ROOT/tools/infer_wsi.py" "${positional[@]}" --launcher pytorch "$@"
