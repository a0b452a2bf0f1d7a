"""A champion the alias already moved on from is not rolled out: :func:`lepton_deployer.api.superseded` reads
the later ``registry.alias.moved`` events of the tenant in the real EVENTS stream (a real nats-server)."""

from __future__ import annotations

import uuid

from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS

from lepton_core import events
from lepton_core.wire import lineage
from lepton_deployer.api import superseded


async def moved(
    nc: NATS, tenant: str, model: str, alias: str, version: int
) -> events.Event[events_pb2.ModelAliasMoved]:
    """Publishes a move and returns it as the deployer's consumer would get it (with its stream sequence)."""
    data = events_pb2.ModelAliasMoved(
        tenant=tenant, lineage=lineage(model_name=model, model_version=version), alias=alias
    )
    ack = await events.publish(
        nc.jetstream(), data, tenant=tenant, event_id=f"moved:{uuid.uuid4().hex}", source="/lepton/registry"
    )
    return events.Event(id="", type="", source="", time="", subject="", data=data, headers={}, sequence=ack.seq)


async def test_a_move_overtaken_by_a_later_move_of_the_same_alias_is_superseded(nc: NATS) -> None:
    tenant = "t" + uuid.uuid4().hex[:10]
    first = await moved(nc, tenant, "m", "champion", 1)
    other_model = await moved(nc, tenant, "n", "champion", 5)
    other_alias = await moved(nc, tenant, "m", "staging", 2)
    elsewhere = await moved(nc, "u" + uuid.uuid4().hex[:10], "m", "champion", 9)  # another tenant's
    last = await moved(nc, tenant, "m", "champion", 3)
    js = nc.jetstream()
    assert await superseded(js, first)  # "m"'s champion moved again, to v3
    for event in (other_model, other_alias, last, elsewhere):
        assert not await superseded(js, event), event.data
    # A hand-made event without a sequence (not from the stream) is never judged superseded.
    assert not await superseded(
        js, events.Event(id="", type="", source="", time="", subject="", data=first.data, headers={})
    )
