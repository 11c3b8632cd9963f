"""The data side of training: stores joined by id, the review dataset, sampling, checks."""
