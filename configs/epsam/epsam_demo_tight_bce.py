# EP-SAM on the demo data with three changes beyond the paper that keep the SAM decoder from
# collapsing to "the whole patch" (README, demo results; docs/method.md §5). Chosen on val.
# * Tight initial masks: a fixed cut of the normalised fused CAM at 0.5 instead of the
#   quantile rule, which keeps 90 % of the non-zero CAM (masks of ~89 % of a train patch).
# * A BCE term beside soft Dice + soft IoU. Once a whole-patch mask's logits saturate, the
#   soft losses' gradient vanishes and training stops moving (even on ground-truth masks);
#   BCE's does not (tests/test_sam_decoder_segmentor.py).
# * PEPM points drawn in proportion to the CAM over the whole patch (Eq. 4 read literally,
#   point_source='pepm_whole_map') instead of inside the tight initial mask, so prompts also
#   reach tumour the mask missed. This sets the test prompts (and the pseudo-label prompts,
#   if rounds are turned back on); training prompts stay uniform inside each target.
# * No pseudo-label rounds: the whole-map prompts' SAM masks reach beyond the tight CAM masks,
#   so IDS keeps 8-10 of 120, and a decoder retrained on those scored lower on val.
# * Exported pseudo-labels: with no round, the final decoder's training targets would be the
#   initial masks, so the exported dataset (what a UNet trains on) holds decoder_r0's own
#   masks of every positive training patch instead (export.labels='final_decoder').
# This is what `make demo` runs.
# The paper's setting is configs/epsam/epsam_demo.py.
#   python tools/run_pipeline.py configs/epsam/epsam_demo_tight_bce.py
_base_ = ['./epsam_demo.py']
work_dir = 'work_dirs/epsam_tight_bce_demo'
data_root = 'data/demo'
cam = dict(postprocess=dict(quantile=None, fixed_threshold=0.5))
decoder = dict(cfg_options=dict(
    model=dict(bce_weight=1.0, prompt_head=dict(point_source='pepm_whole_map')),
    train_cfg=dict(iters_per_round=300)))
rounds = dict(num_rounds=0)
export = dict(labels='final_decoder')
