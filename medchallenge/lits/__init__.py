"""LiTS liver and liver-tumour segmentation in CT by transfer from the ``brats`` Havaei models."""
