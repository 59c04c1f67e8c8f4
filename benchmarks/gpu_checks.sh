#!/usr/bin/env bash
# The GPU figures of the README in one run, on a bare CUDA machine that has PyTorch but no
# network (the way this project's GPU checks are run):
#
#   OUT=DIR bash benchmarks/gpu_checks.sh            # every check
#   CHECKS="ablation cam" OUT=DIR bash benchmarks/gpu_checks.sh   # CHECKS="": set-up only
#
# Set-up (skipped when `import mmcv.ops, mmseg, segment_anything` already works):
#   * the pinned pure-Python wheels from $WHEELS (default .whl: mmengine, mmsegmentation,
#     segment-anything, openslide-python/-bin, setuptools<81 and their small deps) are
#     installed into $SITE (default /tmp/site);
#   * full mmcv 2.1.0: a prebuilt mmcv-2.1.0-cpXY-*.whl in $WHEELS for this Python is
#     installed; otherwise one is built from the sdist in $WHEELS with its ops compiled for
#     the CPU (CUDA hidden during the build: EP-SAM calls no mmcv CUDA op; about 2 min on
#     16 cores) and copied to $OUT, so that the next run can carry it;
#   * the demo data is made from the sources in $SOURCES (default .gpu/sources, the files
#     tools/fetch_sources.py caches) unless data/demo exists.
# Checks ($CHECKS, default all, in this order; each log lands in $OUT):
#   cam       benchmarks/bench_cam_extraction.py (views per forward 4 / 2 / 1; on CUDA the
#             quantile threshold and opening run on the GPU, the writes on a background
#             thread): extraction against its floor of four bare forwards;
#   decoder   benchmarks/bench_decoder_cache.py (SAM ViT-B, random weights);
#   ablation  benchmarks/ablation_initial_masks.py with $ABLATION_CONFIG (default the
#             full-resolution demo classifier) and $ABLATION_VARIANTS (default b c d), its
#             seeds run in parallel (about 2 min per variant on an H200), then aggregated;
#   table3    benchmarks/ablation_cam_methods.py (paper Table 3: every CAM method x every
#             post-processing variant, val and test) on the (d) classifiers the ablation
#             check trained, one per seed; mean ± sd over the seeds (run after ablation);
#   wsi       benchmarks/bench_wsi_inference.py on the whole 20k x 20k slide, with the demo
#             pipeline's default SAM image encoder and with SAM ViT-B (random weights);
#   memory    benchmarks/bench_training_memory.py: peak GPU memory of every training stage
#             at batch 16, 512x512, AMP on;
#   dist      tools/dist_infer_wsi.sh on two slides with one rank per GPU (all GPUs).
# BUDGET=SECONDS (default 0: none) caps the whole run: each check gets what is left, so that
# a run under a hard time limit still returns the logs of the checks it finished.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-work_dirs/gpu_checks}
WHEELS=${WHEELS:-.whl}
SOURCES=${SOURCES:-.gpu/sources}
SITE=${SITE:-/tmp/site}
PY=${PY:-python3}
CHECKS=${CHECKS-cam decoder ablation table3 wsi memory dist}  # empty: set-up only
ABLATION_CONFIG=${ABLATION_CONFIG:-configs/epsam/classifier_demo_full.py}
ABLATION_SEEDS=${ABLATION_SEEDS:-0 1 2}
ABLATION_OPTIONS=${ABLATION_OPTIONS:-}  # e.g. 'train_cfg.max_epochs=10'
ABLATION_ARGS=(--config "$ABLATION_CONFIG" --work-dir work_dirs/ablation_gpu
               --variants ${ABLATION_VARIANTS:-b c d})
[ -n "$ABLATION_OPTIONS" ] && ABLATION_ARGS+=(--cfg-options $ABLATION_OPTIONS)
BUDGET=${BUDGET:-0}
WSI_WORK_DIR=${WSI_WORK_DIR:-work_dirs/bench_wsi_gpu}  # a synthetic_20000.tif there is reused
RAW="$OUT/raw"  # per-process logs, packed into $OUT/raw_logs.tar.gz at the end
mkdir -p "$OUT" "$RAW"
export PYTHONUNBUFFERED=1 PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[gpu_checks $(date +%T)] $*" | tee -a "$OUT/gpu_checks.log"; }
# capped SECONDS_BEFORE_END CMD...: run CMD with what is left of BUDGET minus the reserve
capped() {
  local reserve=$1; shift
  if [ "$BUDGET" -le 0 ]; then "$@"; return; fi
  local left=$((BUDGET - SECONDS - reserve))
  [ "$left" -gt 5 ] || { log "no time left for: $*"; return 124; }
  timeout --kill-after=5 "$left" "$@"
}

if ! "$PY" -c 'import mmcv.ops, mmseg, segment_anything' 2>/dev/null; then
  log "installing the stack from $WHEELS into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
    "$WHEELS"/*.whl >>"$OUT/gpu_checks.log" 2>&1 || { log 'wheel install failed'; exit 1; }
  if [ ! -d data/demo ]; then
    log "making the demo data from $SOURCES (in the background)"
    "$PY" tools/make_demo_data.py --out data/demo --sources-dir "$SOURCES" \
      >"$RAW/make_demo_data.log" 2>&1 &
    DATA_PID=$!
  fi
  PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  if compgen -G "$WHEELS/mmcv-2.1.0-$PYTAG-*.whl" >/dev/null; then
    log "using the prebuilt $(basename "$WHEELS"/mmcv-2.1.0-$PYTAG-*.whl)"
    MMCV_WHEEL=$(ls "$WHEELS"/mmcv-2.1.0-$PYTAG-*.whl)
  else
    log "building mmcv 2.1.0 with CPU ops (MAX_JOBS=$(nproc))"
    BUILD=$(mktemp -d)
    tar -xzf "$WHEELS"/mmcv-2.1.0.tar.gz -C "$BUILD"
    sed -i 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-2.1.0/setup.py"  # as tools/setup_env.sh
    (cd "$BUILD/mmcv-2.1.0" && CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) \
       "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$BUILD/out") \
      >>"$OUT/gpu_checks.log" 2>&1 || { log 'mmcv build failed'; exit 1; }
    MMCV_WHEEL=$(ls "$BUILD"/out/mmcv-*.whl)
    cp "$MMCV_WHEEL" "$OUT/"  # carry it in $WHEELS next time to skip the build
  fi
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$MMCV_WHEEL" \
    >>"$OUT/gpu_checks.log" 2>&1
  [ -n "${DATA_PID:-}" ] && { wait "$DATA_PID" || { log 'demo data failed'; exit 1; }; }
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/gpu_checks.log"
import mmcv, mmengine, mmseg, torch
from mmcv.ops import nms  # noqa: F401  (the compiled ops are there)
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
print(f'torch {torch.__version__} on {gpu}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmseg {mmseg.__version__}')
EOF

for check in $CHECKS; do
  log "check: $check"
  case $check in
    ablation)
      pids=()
      for seed in $ABLATION_SEEDS; do
        capped "${ABLATION_RESERVE:-60}" "$PY" benchmarks/ablation_initial_masks.py "${ABLATION_ARGS[@]}" --seeds "$seed" \
          >"$RAW/ablation_seed$seed.log" 2>&1 &
        pids+=($!)
      done
      for pid in "${pids[@]}"; do wait "$pid" || log "an ablation seed failed (see its log)"; done
      # with every run done this only re-reads the outputs and aggregates (capped: a seed that
      # failed would otherwise be retrained here)
      capped 0 timeout 180 "$PY" benchmarks/ablation_initial_masks.py "${ABLATION_ARGS[@]}" \
        --seeds $ABLATION_SEEDS 2>&1 | tail -n 20 >"$OUT/ablation.log"
      cp work_dirs/ablation_gpu/ablation_initial_masks.json "$OUT/" 2>/dev/null
      mkdir -p "$RAW/ablation_runs"
      for f in work_dirs/ablation_gpu/*/*/vis_data/scalars.json \
               work_dirs/ablation_gpu/*/stage1_*/*.json; do
        [ -f "$f" ] && { g=${f#work_dirs/ablation_gpu/}; cp "$f" "$RAW/ablation_runs/${g//\//__}"; }
      done ;;
    table3)
      runs=()
      for seed in $ABLATION_SEEDS; do
        if [ -f "work_dirs/ablation_gpu/d_seed$seed/classifier_done.json" ]; then
          runs+=("work_dirs/ablation_gpu/d_seed$seed")
        else
          log "table3: no trained (d) classifier for seed $seed (run the ablation check first)"
        fi
      done
      [ "${#runs[@]}" -gt 0 ] && capped 0 "$PY" benchmarks/ablation_cam_methods.py "${runs[@]}" \
        --splits val test --results "$OUT/ablation_cam_methods.json" \
        >"$OUT/ablation_cam_methods.log" 2>&1 ;;
    cam)
      capped 0 "$PY" benchmarks/bench_cam_extraction.py --device cuda --patches 16 --views 4 2 1 \
        --repeats 2 >"$OUT/bench_cam.log" 2>&1 ;;
    decoder)
      capped 0 "$PY" benchmarks/bench_decoder_cache.py --device cuda --arch vit_b --images 16 \
        --batch-size 4 >"$OUT/bench_decoder.log" 2>&1 ;;
    wsi)
      capped 0 "$PY" benchmarks/bench_wsi_inference.py --device cuda --size 20000 --max-tiles "${WSI_MAX_TILES:-0}" \
        --batch-size 8 --work-dir "$WSI_WORK_DIR" >"$OUT/bench_wsi_default_encoder.log" 2>&1
      capped 0 "$PY" benchmarks/bench_wsi_inference.py --device cuda --size 20000 --max-tiles "${WSI_MAX_TILES:-0}" \
        --sam-arch vit_b --batch-size 8 --work-dir "$WSI_WORK_DIR" \
        >"$OUT/bench_wsi.log" 2>&1 ;;
    memory)
      capped 0 "$PY" benchmarks/bench_training_memory.py --device cuda --batch-size 16 --size 512 \
        --steps 3 >"$OUT/bench_training_memory.log" 2>&1 ;;
    dist)
      GPUS=$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')
      capped 0 "$PY" benchmarks/bench_wsi_inference.py --device cuda --size 4000 --max-tiles 0 \
        --work-dir work_dirs/bench_wsi_dist >"$RAW/dist_setup.log" 2>&1  # slide + untrained run
      cp work_dirs/bench_wsi_dist/synthetic_4000.tif work_dirs/bench_wsi_dist/second_4000.tif
      PYTHON="$PY" capped 0 bash tools/dist_infer_wsi.sh configs/epsam/epsam_demo.py \
        work_dirs/bench_wsi_dist/untrained_run_config work_dirs/bench_wsi_dist/synthetic_4000.tif \
        work_dirs/bench_wsi_dist/second_4000.tif "$GPUS" --out work_dirs/bench_wsi_dist/dist_out \
        --device cuda --overwrite >"$OUT/dist_infer_wsi.log" 2>&1
      cp work_dirs/bench_wsi_dist/dist_out/run_summary.json "$OUT/dist_run_summary.json" 2>/dev/null ;;
    *) log "unknown check $check" ;;
  esac
  log "done: $check (exit $?)"
done
tar -czf "$OUT/raw_logs.tar.gz" -C "$OUT" raw && rm -rf "$RAW"
log "outputs in $OUT"
