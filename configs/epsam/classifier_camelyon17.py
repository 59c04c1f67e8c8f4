# Stage 1 on Camelyon17 patches: same classifier and schedule as Camelyon16 (the paper uses
# one training recipe for both; the datasets differ only in CAM post-processing).
_base_ = ['./classifier_camelyon16.py']
data_root = 'data/camelyon17'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
custom_hooks = [dict(type='CAMGeneratorHook', splits=('train', 'val', 'test'),
                     preset='camelyon17', batch_size=16, num_workers=4)]
