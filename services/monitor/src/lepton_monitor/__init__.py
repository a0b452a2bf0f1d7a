"""The monitor service: statistics from the sampled prediction logs."""
