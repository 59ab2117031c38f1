"""Admission / placement policies: where blocks go below HBM."""
