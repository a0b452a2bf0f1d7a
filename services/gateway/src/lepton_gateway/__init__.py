"""Lepton's inference gateway: the one way clients reach served models.

KServe V2 / Open Inference Protocol over gRPC (:mod:`lepton_gateway.grpc_api`) and REST
(:mod:`lepton_gateway.rest`), authenticated by the platform's API keys (the key records every
service follows) and checked against the gateway's permission table
(:mod:`lepton_gateway.permissions`: predictions need ``deployments.predict``). The model name a
client sends is a deployment's name; the gateway routes it to the tenant's Triton model by
the deployer's records (:mod:`lepton_gateway.routes`), limits each tenant's request rate
(:mod:`lepton_gateway.limits`) and sends Triton the secret the serving model checks.
"""
