"""mrhp-prep: staged, cached preprocessing and training for Multimodal Review Helpfulness
Prediction."""

__version__ = "0.1.0"
