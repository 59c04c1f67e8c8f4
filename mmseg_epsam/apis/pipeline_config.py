"""The keys and values a pipeline config may hold (docs/method.md §12), checked before any
stage runs."""
import difflib
from typing import List

from mmengine.config import Config

from ..datasets.ids_pseudo_label_dataset import POLICIES
from ..datasets.masks import parse_mask_values
from ..functional.cam import cam_postprocess
from ..functional.ids import IDS_VARIANTS
from ..models.segmentors import DECODER_RESET_MODES

#: The keys of a pipeline config, by section ('' = top level); any other is an error.
PIPELINE_KEYS = {
    '': ('work_dir', 'data_root', 'mask_values', 'classifier', 'cam', 'decoder', 'rounds',
         'test', 'export'),
    'classifier': ('config', 'cfg_options'),
    'cam': ('splits', 'preset', 'method', 'postprocess', 'views_per_forward', 'batch_size',
            'num_workers', 'show', 'evaluate', 'gate_threshold'),
    'decoder': ('config', 'cfg_options', 'sam_checkpoint', 'require_sam_checkpoint'),
    'rounds': ('num_rounds', 'ids_threshold', 'ids_variant', 'policy', 'reset'),
    'test': ('num_pictures', 'score_every_decoder'),
    'export': ('labels', 'negative_patches'),
}
#: What the ``pseudo_label_dataset`` stage exports as the train labels (``export.labels``):
#: ``'last_targets'``, the pseudo-labels the final decoder trained on (IDS-kept SAM masks of
#: the last round; the initial masks when no round ran), or ``'final_decoder'``, the final
#: decoder's own masks on every positive training patch (docs/method.md §6).
EXPORT_LABELS = ('last_targets', 'final_decoder')
#: Whether the exported train split lists the negative training patches, with all-zero
#: masks (``export.negative_patches``): ``None`` (default) as the final decoder trained
#: (its dataset's ``negative_patches``), ``'skip'`` never (the paper's positives-only
#: pseudo-labels), ``'empty_target'`` always (their image labels say they hold no tumour).
EXPORT_NEGATIVE_PATCHES = (None, 'skip', 'empty_target')


class PipelineConfigError(ValueError):
    """A pipeline config holds an unknown key or an invalid value."""


def _unknown_key_errors(section: str, keys, allowed) -> List[str]:
    """One message per key of ``section`` not in ``allowed``, with a close match if any."""
    errors = []
    for key in keys:
        if key in allowed:
            continue
        name = f'{section}.{key}' if section else key
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = (f'; did you mean {section + "." if section else ""}{close[0]}?' if close
                else f'; known keys: {", ".join(allowed)}')
        errors.append(f'unknown pipeline key {name!r}{hint}')
    return errors


def validate_pipeline_config(cfg: Config) -> None:
    """Check every key and value of a pipeline config before anything runs.

    Raises:
        PipelineConfigError: listing every unknown key (with a "did you mean" from
            :mod:`difflib`) and every invalid value.
    """
    errors = _unknown_key_errors('', list(cfg.keys()), PIPELINE_KEYS[''])
    for section in ('classifier', 'cam', 'decoder', 'rounds', 'test', 'export'):
        value = cfg.get(section, {})
        if not isinstance(value, dict):
            errors.append(f'{section} must be a dict, got {value!r}')
            continue
        errors += _unknown_key_errors(section, list(value.keys()), PIPELINE_KEYS[section])
    for section in ('classifier', 'decoder'):
        if 'config' not in cfg.get(section, {}):
            errors.append(f'{section}.config is required (the stage\'s MMEngine config)')
    rounds = cfg.get('rounds', {})
    checks = [
        ('rounds.reset', rounds.get('reset', 'pretrained'), DECODER_RESET_MODES),
        ('rounds.policy', rounds.get('policy', 'per_round'), POLICIES),
        ('rounds.ids_variant', rounds.get('ids_variant', 'paper'), IDS_VARIANTS),
        ('export.labels', cfg.get('export', {}).get('labels', 'last_targets'),
         EXPORT_LABELS),
        ('export.negative_patches', cfg.get('export', {}).get('negative_patches'),
         EXPORT_NEGATIVE_PATCHES),
    ]
    for name, value, allowed in checks:
        if value not in allowed:
            errors.append(f'{name} must be one of {allowed}, got {value!r}')
    num_rounds = rounds.get('num_rounds', 3)
    if not isinstance(num_rounds, int) or isinstance(num_rounds, bool) or num_rounds < 0:
        errors.append(f'rounds.num_rounds must be an integer >= 0, got {num_rounds!r}')
    threshold = rounds.get('ids_threshold', 0.9)
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        errors.append(f'rounds.ids_threshold must be a number in [0, 1], got {threshold!r}')
    cam = cfg.get('cam', {})
    try:
        cam_postprocess(cam.get('preset', 'camelyon16'), **cam.get('postprocess', {}))
    except (KeyError, TypeError, ValueError) as exc:
        errors.append(f'cam.preset / cam.postprocess: {exc}')
    splits = cam.get('splits', ('train', 'val', 'test'))
    if 'train' not in splits or 'test' not in splits:
        errors.append(f'cam.splits must include train and test (the SAM stages read their '
                      f'stage-1 outputs), got {splits!r}')
    num_pictures = cfg.get('test', {}).get('num_pictures', 8)
    if not isinstance(num_pictures, int) or num_pictures < 0:
        errors.append(f'test.num_pictures must be an integer >= 0, got {num_pictures!r}')
    scored_splits = cfg.get('test', {}).get('score_every_decoder', ())
    if isinstance(scored_splits, str) or not set(scored_splits) <= set(splits):
        errors.append(f'test.score_every_decoder must be a list of splits that have stage-1 '
                      f'outputs ({list(splits)}), got {scored_splits!r}')
    try:
        parse_mask_values(cfg.get('mask_values'))
    except ValueError as exc:
        errors.append(f'mask_values: {exc}')
    if errors:
        raise PipelineConfigError('invalid pipeline config:\n  ' + '\n  '.join(errors))
