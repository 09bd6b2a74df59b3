"""medchallenge: medical-imaging deep-learning challenges from raw data to a scored submission."""

__version__ = "0.1.0"
