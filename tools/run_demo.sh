#!/usr/bin/env bash
# The demo on the bundled data: fetch the real H&E source images (once), build the demo patch
# dataset (once), run the whole EP-SAM pipeline, then train a stock MMSeg UNet on the
# pseudo-labels it exported and score it with the same metric. Safe to rerun: every step
# skips what is already complete.
#   bash tools/run_demo.sh [run_pipeline.py options, e.g. --sam-checkpoint sam_vit_b_01ec64.pth]
# EPSAM_DEMO_CONFIG picks the pipeline config: configs/epsam/epsam_demo_tight_bce.py by
# default (chosen on val; README, demo results), configs/epsam/epsam_demo.py for the paper's
# settings.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${EPSAM_VENV:-$ROOT/.venv}/bin/python"
CONFIG="${EPSAM_DEMO_CONFIG:-configs/epsam/epsam_demo_tight_bce.py}"
if [ ! -f "$CONFIG" ]; then
  echo "EPSAM_DEMO_CONFIG: pipeline config $CONFIG not found (e.g. configs/epsam/epsam_demo.py)" >&2
  exit 2
fi
WORK=$("$PY" -c 'import sys; from mmengine.config import Config
print(Config.fromfile(sys.argv[1]).work_dir)' "$CONFIG")
# a --work-dir passed through to run_pipeline.py moves the run, and the UNet follows it
ARGS=("$@")
for i in "${!ARGS[@]}"; do
  case "${ARGS[$i]}" in
    --work-dir=*) WORK="${ARGS[$i]#--work-dir=}" ;;
    --work-dir) WORK="${ARGS[$((i + 1))]:?--work-dir needs a folder}" ;;
  esac
done
WORK="${WORK%/}"
case "$WORK" in /*) ;; *) WORK="$ROOT/$WORK" ;; esac

"$PY" tools/fetch_sources.py
"$PY" tools/make_demo_data.py --out data/demo
"$PY" tools/run_pipeline.py "$CONFIG" "$@"

# "U-Net on EP-SAM pseudo-labels": a stock MMSeg model on the exported pseudo-label dataset.
LABELS="$WORK/pseudo_label_dataset"
UNET="work_dirs/unet_pseudo_labels_$(basename "$WORK")"
UNET_OPTIONS=(--cfg-options "train_dataloader.dataset.data_root=$LABELS"
              "val_dataloader.dataset.data_root=$LABELS" "test_dataloader.dataset.data_root=$LABELS")
"$PY" tools/train.py configs/epsam/unet_pseudo_labels_demo.py --work-dir "$UNET" --resume \
  "${UNET_OPTIONS[@]}"
"$PY" tools/test.py configs/epsam/unet_pseudo_labels_demo.py "$UNET/iter_300.pth" \
  --work-dir "$UNET" --out "$UNET/test_masks" "${UNET_OPTIONS[@]}"
echo "EP-SAM outputs: $WORK (summary.json, test/pictures/); UNet: $ROOT/$UNET"
