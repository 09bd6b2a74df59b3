"""BraTS brain-tumour segmentation with Havaei et al.'s TwoPathCNN / InputCascadeCNN (the base of ``lits``)."""
