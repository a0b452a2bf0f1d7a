"""A message is trusted only as far as its subject (``lepton_core.trust`` through ``events.decode``), in memory."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import Message
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2 as ev
from nats.aio.msg import Msg

from lepton_core import events, trust
from lepton_core.errors import InvalidArgument


def _ref(name: str, bucket: str = "artifacts") -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(bucket=bucket, name=name, digest="sha256:" + "0" * 64, size=1)


def _msg(subject: str, message: Message, ce_type: str | None = None) -> Msg:
    headers = events.headers_for(message, event_id="e1", source="/test", ce_subject="")
    if ce_type is not None:
        headers["ce-type"] = ce_type
    return Msg(_client=None, subject=subject, data=message.SerializeToString(), headers=headers)  # type: ignore[arg-type]


def _refused(subject: str, message: Message, ce_type: str | None = None) -> trust.ForgedEvent:
    with pytest.raises(trust.ForgedEvent) as err:
        events.decode(_msg(subject, message, ce_type))
    return err.value


def test_the_tenant_of_a_decoded_event_is_its_subjects() -> None:
    version = ev.ModelVersionCreated(
        tenant="b", artifact=_ref("b/abc.zip"), dataset_object=_ref("b/dv_1.parquet", "datasets")
    )
    event = events.decode(_msg("lepton.evt.b.registry.version.created", version))
    assert event.tenant == "b" and event.data == version
    job = ev.TrainingRequested(tenant="b", dataset_object=_ref("b/dv_1.parquet", "datasets"))
    assert events.decode(_msg("lepton.jobs.b.training", job)).tenant == "b"
    batch = ev.PredictionLogBatch(tenant="b", logs=[ev.PredictionLogged(log_id="1"), ev.PredictionLogged(tenant="b")])
    assert events.decode(_msg("lepton.pred.b.churn", batch)).tenant == "b"


def test_a_body_naming_another_tenant_is_refused_naming_the_field() -> None:
    err = _refused("lepton.evt.b.registry.version.created", ev.ModelVersionCreated(tenant="a"))
    assert isinstance(err, InvalidArgument) and isinstance(err, ValueError)
    assert err.field == "tenant"
    assert str(err).startswith(
        "tenant: the payload names tenant 'a' but arrived on lepton.evt.b.registry.version.created"
    )
    assert _refused("lepton.evt.b.dataset.created", ev.DatasetCreated()).field == "tenant"  # names none
    nested = ev.EvaluationCompleted(tenant="b", training=ev.TrainingCompleted(tenant="a"))
    assert _refused("lepton.evt.b.evaluation.completed", nested).field == "training.tenant"
    batch = ev.PredictionLogBatch(tenant="b", logs=[ev.PredictionLogged(), ev.PredictionLogged(tenant="a")])
    assert _refused("lepton.pred.b.churn", batch).field == "logs[1].tenant"


def test_an_object_outside_the_tenants_prefix_is_refused_naming_the_field() -> None:
    cases: list[tuple[str, Message, str]] = [
        (
            "lepton.evt.b.registry.version.created",
            ev.ModelVersionCreated(tenant="b", artifact=_ref("a/abc.zip")),
            "artifact.name",
        ),
        (
            "lepton.evt.b.registry.version.created",
            ev.ModelVersionCreated(tenant="b", artifact=_ref("b/x.zip"), champion_artifact=_ref("bb/x.zip")),
            "champion_artifact.name",
        ),
        (
            "lepton.evt.b.dataset.version.created",
            ev.DatasetVersionCreated(tenant="b", object=_ref("a/dv.parquet", "datasets")),
            "object.name",
        ),
        (
            "lepton.jobs.b.training",
            ev.TrainingRequested(tenant="b", dataset_object=_ref("b/../a/dv.parquet", "datasets")),
            "dataset_object.name",
        ),
        (
            "lepton.jobs.b.training",
            ev.TrainingRequested(tenant="b", dataset_object=_ref("b/", "datasets")),
            "dataset_object.name",
        ),
        (
            "lepton.jobs.b.training",
            ev.TrainingRequested(tenant="b", dataset_object=_ref("b", "datasets")),
            "dataset_object.name",
        ),
        (
            "lepton.evt.b.evaluation.completed",
            ev.EvaluationCompleted(tenant="b", training=ev.TrainingCompleted(tenant="b", artifact=_ref("a/x.zip"))),
            "training.artifact.name",
        ),
        (
            "lepton.evt.b.training.completed",
            ev.TrainingCompleted(tenant="b", artifact=_ref("b/x.zip", "KV_models")),
            "artifact.bucket",
        ),
    ]
    for subject, message, field in cases:
        err = _refused(subject, message)
        assert err.field == field, (message, err)
    err = _refused(*cases[0][:2])
    assert "object 'a/abc.zip' in artifacts lies outside the prefix 'b/' of tenant 'b'" in str(err)


def test_a_type_on_a_subject_it_is_not_published_on_is_refused() -> None:
    version = ev.ModelVersionCreated(tenant="b")
    alias = "ai.lepton.registry.version.created.v1"
    for subject in (
        "lepton.evt.b.registry.alias.moved",  # another type's subject
        "lepton.jobs.training",  # the job queue without a tenant
        "lepton.evt.b",
        "lepton.pred.b.churn.more",
    ):
        message: Message = ev.TrainingRequested(tenant="b") if "jobs" in subject else version
        if "pred" in subject:
            message = ev.PredictionLogBatch(tenant="b")
        err = _refused(subject, message, None if subject != "lepton.evt.b.registry.alias.moved" else alias)
        assert err.field == "ce-type", subject
    err = _refused("lepton.jobs.training", ev.TrainingRequested(tenant="b"))
    assert "is published on lepton.jobs.<tenant>.training, not on 'lepton.jobs.training'" in str(err)


def test_the_job_queue_subject_carries_the_tenant() -> None:
    spec = events.spec_of(ev.TrainingRequested)
    assert spec.subject("acme") == "lepton.jobs.acme.training"
    assert spec.filter() == "lepton.jobs.*.training"


def test_unset_references_pass_and_plans_skip_what_holds_nothing() -> None:
    trust.check_payload(ev.TrainingCompleted(tenant="b"), "b")
    plan: Any = trust._plan(ev.PredictionLogged.DESCRIPTOR)
    assert [f.name for f in plan] == ["tenant"]  # lineage and time hold no tenant or reference
