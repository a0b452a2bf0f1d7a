"""The evaluator service: metrics of trained models on their held-out split."""
