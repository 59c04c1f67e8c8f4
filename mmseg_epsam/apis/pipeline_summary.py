"""The text summary of a pipeline run (paper Tables 5-6 in words)."""

#: EPSAMMetric keys of each every-decoder row: per-patch Dice / IoU on positives, FP area on
#: negatives, and the dataset-level tumour Dice and mDice (docs/method.md §8).
EVERY_DECODER_METRICS = ('Dice', 'IoU', 'neg_fp_area', 'tumour_Dice', 'mDice')


def _fmt(value) -> str:
    return '   -  ' if value is None else f'{100 * value:6.2f}'


def format_summary(summary: dict) -> str:
    """A Table-5-like text table of the summary."""
    lines = ['', 'EP-SAM summary (Dice %, per patch, positives)', '-' * 72]
    for row in summary['rounds']:
        kept = f"  kept {row['kept']} (Dice of kept {_fmt(row.get('kept_dice'))})" \
            if 'kept' in row else ''
        lines.append(f"{row['what']:<42}{_fmt(row['dice'])}{kept}")
    cam_test = (summary.get('cams') or {}).get('test') or {}
    for gate in ('gated', 'ungated'):
        if gate in cam_test:
            label = f'initial masks (CAM), test, {"gated" if gate == "gated" else "no gate"}'
            lines.append(f"{label:<42}{_fmt(cam_test[gate]['dice'])}  IoU "
                         f"{100 * cam_test[gate]['iou']:.2f}  FP area on negatives "
                         f"{100 * cam_test[gate]['fp_area']:.2f}%")
    for name in ('test', 'test_ungated'):
        metrics = summary.get(name)
        if metrics:
            label = 'EP-SAM, test, ' + ('gated' if name == 'test' else 'no gate')
            lines.append(f"{label:<42}{metrics['Dice']:6.2f}  IoU {metrics['IoU']:.2f}  "
                         f"FP area on negatives {metrics['neg_fp_area']:.2f}%  "
                         f"mDice {metrics['mDice']:.2f}")
    every = summary.get('every_decoder') or []
    if every:
        lines += ['', 'Every decoder (Dice % on positives / FP area % on negatives; '
                  'gated | no gate)']
        for split in dict.fromkeys(row['split'] for row in every):
            for decoder in dict.fromkeys(row['decoder'] for row in every):
                cells = {row['gated']: row for row in every
                         if row['split'] == split and row['decoder'] == decoder}
                lines.append(f"  {split:<5} {decoder:<12}" + ' | '.join(
                    f"{cells[g]['Dice']:6.2f} / {cells[g]['neg_fp_area']:6.2f}"
                    for g in (True, False) if g in cells))
    times = {stage: wall for stage, wall in (summary.get('stage_wall_s') or {}).items()
             if wall is not None}
    if times:
        lines += ['', 'Stage wall time (s, the run that finished each stage): ' + ', '.join(
            f'{stage} {wall:.0f}' for stage, wall in times.items())]
    if summary.get('sam_model'):
        lines.append(f"SAM: {summary['sam_model']}")
    if 'RANDOM' in str(summary.get('sam_model')):
        lines.append('NOTE: the SAM stages used RANDOM weights (tests only; numbers are not '
                     'EP-SAM results).')
    return '\n'.join(lines)
