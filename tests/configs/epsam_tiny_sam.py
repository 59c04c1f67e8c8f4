# The demo pipeline with a TINY SAM of RANDOM weights: fast enough for the tests, useless for
# results (the demo itself uses LiteMedSAM).
_base_ = ['../../configs/epsam/epsam_demo.py']
classifier = dict(config='../../configs/epsam/classifier_demo.py')
decoder = dict(config='sam_decoder_tiny.py')
