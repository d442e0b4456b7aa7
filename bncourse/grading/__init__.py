"""Batch grading of submitted exercise notebooks: ``bncourse grade``."""
