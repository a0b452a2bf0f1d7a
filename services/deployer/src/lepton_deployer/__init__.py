"""The deployer service: registered model versions served on Triton."""
