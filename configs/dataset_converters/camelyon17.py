# Camelyon17 -> patch dataset (docs/method.md §7, paper Table 1). Used by
#   python tools/dataset_converters/camelyon.py SLIDE_DIR ANN_DIR OUT_DIR --dataset camelyon17
# (this file is the preset; `--config my.py` overrides any key, command-line flags override both).
dataset = 'camelyon17'

# Patches: 512x512 at level 0 (40x) on a true stride-256 grid.
level = 0
patch_size = 512
stride = 256

# Labels: positive when 20-90 % tumour ('[]' = both bounds inclusive), negative when no tumour
# and at least `min_tissue` tissue.
pos_range = (0.2, 0.9)
pos_bounds = '[]'
min_tissue = 0.5

# Tissue: Otsu on HSV saturation at 1/32 of level 0, closing and median filter.
tissue = dict(downsample=32, closing_size=5, median_size=5, min_saturation=20)

# ASAP groups (case-insensitive): `metastases` tumour, `normal` exclusion.
tumour_groups = ['metastases']
exclusion_groups = ['normal']
outside_tolerance = 64
# Camelyon17 slides without XML may still hold tumour (slide-level labels only), so every
# listed slide must have its annotation: no normal pattern.
normal_pattern = None

# Balanced sampling per split: (positives, negatives) = paper Table 1.
targets = dict(train=(6068, 6000), val=(698, 700), test=(2000, 2000))
pos_bins = 7
max_patches_per_slide = None
seed = 0

# Slide-level splits of the 50 slides with lesion annotations, by patient so that no patient
# (and no slide) is in two splits: patients 000-069 train (centres 0-2 and 060-069 of
# centre 3), 070-079 val (centre 3), 080-099 test (centre 4, a held-out centre).
_annotated = [
    'patient_004_node_4', 'patient_009_node_1', 'patient_010_node_4', 'patient_012_node_0',
    'patient_015_node_1', 'patient_015_node_2', 'patient_016_node_1', 'patient_017_node_1',
    'patient_017_node_2', 'patient_017_node_4', 'patient_020_node_2', 'patient_020_node_4',
    'patient_021_node_3', 'patient_022_node_4', 'patient_024_node_1', 'patient_024_node_2',
    'patient_034_node_3', 'patient_036_node_3', 'patient_038_node_2', 'patient_039_node_1',
    'patient_040_node_2', 'patient_041_node_0', 'patient_042_node_3', 'patient_044_node_4',
    'patient_045_node_1', 'patient_046_node_3', 'patient_046_node_4', 'patient_048_node_1',
    'patient_051_node_2', 'patient_052_node_1', 'patient_060_node_3', 'patient_061_node_4',
    'patient_062_node_2', 'patient_064_node_0', 'patient_066_node_2', 'patient_067_node_4',
    'patient_068_node_1', 'patient_072_node_0', 'patient_073_node_1', 'patient_075_node_4',
    'patient_080_node_1', 'patient_081_node_4', 'patient_086_node_0', 'patient_086_node_4',
    'patient_087_node_0', 'patient_088_node_1', 'patient_089_node_3', 'patient_092_node_1',
    'patient_096_node_0', 'patient_099_node_4',
]
splits = dict(
    train=[s for s in _annotated if int(s[8:11]) < 70],
    val=[s for s in _annotated if 70 <= int(s[8:11]) < 80],
    test=[s for s in _annotated if int(s[8:11]) >= 80],
)

workers = 2
# PNG zlib level: 1 writes a 512x512 H&E patch ~25 % faster than 3 for ~8 % more bytes.
png_compression = 1
