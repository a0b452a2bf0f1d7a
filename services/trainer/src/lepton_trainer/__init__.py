"""The trainer service: training jobs from the JOBS work queue."""
