"""EVPADLResNet inside a stock MMSeg EncoderDecoder, and a stock MMSeg model inherited
through ``mmseg::`` trained on the pseudo-label dataset layout the pipeline exports."""
import math
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_epsam  # noqa: F401  (registers EVPADLResNet)
from conftest import ROOT, write_patch_dataset

CONFIG_DIR = osp.join(ROOT, 'configs', 'epsam')


def tiny_batch(size=64, seed=0):
    """Two uint8 BGR images with 0/1 masks, as PackSegInputs gives them."""
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(2):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                                    generator=generator))
        mask = torch.zeros(1, size, size, dtype=torch.long)
        mask[:, size // 4:size // 2 + i * size // 4, size // 4:] = 1
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=mask)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_evp_adl_resnet_serves_a_stock_encoder_decoder():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'evp_adl_fcn_demo.py'))
    assert cfg.model.type == 'EncoderDecoder' and cfg.model.backbone.type == 'EVPADLResNet'
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    losses = model.train_step(tiny_batch(), optim_wrapper)
    assert {'decode.loss_ce', 'decode.loss_dice'} <= set(losses)
    assert all(math.isfinite(float(v)) for v in losses.values())
    model.eval()
    with torch.no_grad():
        predictions = model.test_step(tiny_batch(seed=1))
    assert len(predictions) == 2
    assert predictions[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert set(predictions[0].pred_sem_seg.data.unique().tolist()) <= {0, 1}
    # the segmentor's pretrained= reaches the backbone as init_cfg Pretrained
    with_weights = Config(dict(cfg.model, pretrained='/weights/resnet50.pth'))
    backbone = MODELS.build(with_weights).backbone
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint='/weights/resnet50.pth')


def walk(node):
    """Every dict in a nested config."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from walk(value)


def test_stock_deeplabv3_trains_on_the_exported_pseudo_label_dataset(tmp_path):
    from mmengine.runner import Runner
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'deeplabv3_pseudo_labels_demo.py'))
    # the model comes from MMSeg's shipped config, SyncBN replaced for one device
    assert (cfg.model.backbone.type, cfg.model.decode_head.type) == ('ResNetV1c', 'ASPPHead')
    assert not [d for d in walk(cfg._cfg_dict.to_dict()) if d.get('type') == 'SyncBN']
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 2
    assert cfg.train_dataloader.dataset.data_root.endswith('pseudo_label_dataset')
    # the exported layout: <work_dir>/pseudo_label_dataset/{img_dir,ann_dir,splits}/;
    # train holds the positive patches with their pseudo-labels
    data_root = str(tmp_path / 'epsam' / 'pseudo_label_dataset')
    write_patch_dataset(data_root, 'train', n_pos=4, n_neg=0, size=64)
    for split in ('val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1, size=64)
    # small enough for a CPU test: ResNet-18 and narrow heads, 64-pixel inputs
    cfg.model.backbone.depth = 18
    cfg.model.decode_head.update(in_channels=512, channels=16)
    cfg.model.auxiliary_head.update(in_channels=256, channels=16)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = data_root
        loader.num_workers = 0
        loader.persistent_workers = False
        for step in loader.dataset.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (64, 64)
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg.update(max_iters=3, val_interval=3)
    cfg.default_hooks.checkpoint.interval = 3
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 3
    assert (tmp_path / 'work' / 'iter_3.pth').is_file()
    metrics = runner.test()
    assert metrics and all(math.isfinite(v) for v in metrics.values()
                           if isinstance(v, float))
