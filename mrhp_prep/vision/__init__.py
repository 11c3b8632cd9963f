"""Region features from photographs: image decoding, the bottom-up-attention Faster R-CNN on
torch + torchvision ops, checkpoint loading, the `extract-rois` stage and the HDF5 RoI store.

Only `store` is light to import; everything else imports torch.
"""
