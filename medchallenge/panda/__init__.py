"""PANDA: prostate ISUP grading from whole-slide images (Kaggle, metric QWK)."""
