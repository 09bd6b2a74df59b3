"""Lymphocytosis (Kaggle, MVA DLMI): reactive vs malignant per patient from blood-smear images and clinical data."""
