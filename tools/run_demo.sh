#!/usr/bin/env bash
# The demo on the bundled data: fetch the real H&E source images (once), build the demo patch
# dataset (once), then run the pipeline and print its metrics. Safe to rerun: every step
# skips what is already complete.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${EPSAM_VENV:-$ROOT/.venv}/bin/python"
DATA="${EPSAM_DEMO_DATA:-data/demo}"
WORK="${EPSAM_DEMO_WORK:-work_dirs/demo}"

"$PY" tools/fetch_sources.py
"$PY" tools/make_demo_data.py --out "$DATA"
"$PY" tools/train.py configs/epsam/unet_demo.py --work-dir "$WORK/unet" --resume \
  --cfg-options "train_dataloader.dataset.data_root=$DATA" \
  "val_dataloader.dataset.data_root=$DATA" "test_dataloader.dataset.data_root=$DATA"
"$PY" tools/test.py configs/epsam/unet_demo.py "$WORK/unet/iter_300.pth" \
  --work-dir "$WORK/unet" --cfg-options "test_dataloader.dataset.data_root=$DATA"
