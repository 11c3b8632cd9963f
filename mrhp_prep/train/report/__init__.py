"""Reporting: metrics, the predictions file, the run's pictures, compare and the papers."""
