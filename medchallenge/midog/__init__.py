"""MIDOG 2021: mitotic-figure detection in histopathology images across scanners (RetinaNet, F1)."""
