#!/usr/bin/env bash
# The demo on the bundled data: fetch the real H&E source images (once), build the demo patch
# dataset (once), run the whole EP-SAM pipeline, then train a stock MMSeg UNet on the
# pseudo-labels it exported and score it with the same metric. Safe to rerun: every step
# skips what is already complete.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${EPSAM_VENV:-$ROOT/.venv}/bin/python"
WORK=work_dirs/epsam_demo

"$PY" tools/fetch_sources.py
"$PY" tools/make_demo_data.py --out data/demo
"$PY" tools/run_pipeline.py configs/epsam/epsam_demo.py "$@"

# "U-Net on EP-SAM pseudo-labels": a stock MMSeg model on the exported pseudo-label dataset.
UNET=work_dirs/unet_pseudo_labels_demo
"$PY" tools/train.py configs/epsam/unet_pseudo_labels_demo.py --work-dir "$UNET" --resume
"$PY" tools/test.py configs/epsam/unet_pseudo_labels_demo.py "$UNET/iter_300.pth" \
  --work-dir "$UNET" --out "$UNET/test_masks"
echo "EP-SAM outputs: $ROOT/$WORK (summary.json, test/pictures/); UNet: $ROOT/$UNET"
