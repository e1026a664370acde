"""Evaluation metrics: FID/KID feature extraction and statistics, domain accuracy."""
