"""Stored episodes into training batches: bursty sequences, the Grain pipeline, their statistics, synthetic episodes."""
