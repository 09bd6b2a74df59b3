"""KiTS19: kidney and kidney-tumour segmentation in CT with a 2D U-Net on axial slices."""
