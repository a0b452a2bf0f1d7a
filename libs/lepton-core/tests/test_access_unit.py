"""Keys, roles, grants and service tokens (lepton_core.access), without servers."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lepton.data.v1 import data_pb2
from lepton.registry.v1 import registry_pb2
from nats.aio.client import Client as NATS
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from lepton_core import access, nats_identity
from lepton_core.access import (
    ROLES,
    KeyBook,
    KeyRecord,
    Principal,
    Rule,
    ServiceSigner,
    ServiceVerifier,
    check_grants,
    digest,
    new_secret,
)
from lepton_core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from lepton_core.settings import ServiceSettings

SECRET = "do-not-print-" + "k" * 24


class ExampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEPTON_EXAMPLE_", extra="ignore")


def test_keys_in_the_environment_stop_the_service_naming_the_setting_never_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEPTON_EXAMPLE_API_KEYS", json.dumps({SECRET: "acme"}))
    with pytest.raises(ValidationError) as err:
        ExampleSettings()
    text = str(err.value)
    assert "LEPTON_EXAMPLE_API_KEYS" in text and "lepton keys create" in text, text
    assert SECRET not in text


def _record(secret: str, **changes: object) -> KeyRecord:
    values: dict[str, object] = {
        "id": "key_000000000001",
        "name": "ci",
        "tenant": "acme",
        "role": "editor",
        "digest": digest(secret),
        "creator": "bootstrap",
        "created": datetime.now(UTC),
    }
    values.update(changes)
    return KeyRecord.model_validate(values)


def test_a_book_knows_keys_by_digest_and_refuses_revoked_and_expired_ones_saying_so() -> None:
    secret = new_secret()
    book = KeyBook([_record(secret)])
    assert secret not in json.dumps([r.model_dump(mode="json") for r in book.records()])
    assert book.authenticate(secret).tenant == "acme"
    with pytest.raises(Unauthenticated, match="not valid"):
        book.authenticate(new_secret())
    with pytest.raises(Unauthenticated, match="no API key"):
        book.authenticate(None)
    before = book.generation
    book.apply("key_000000000001", _record(secret, revoked=datetime.now(UTC)).model_dump_json().encode())
    assert book.generation > before
    with pytest.raises(Unauthenticated, match="revoked"):
        book.authenticate(secret)
    book.apply(
        "key_000000000001", _record(secret, expires=datetime.now(UTC) - timedelta(seconds=1)).model_dump_json().encode()
    )
    with pytest.raises(Unauthenticated, match="expired"):
        book.authenticate(secret)
    # A revocation set in the future (a rotation's grace) leaves the key working until then.
    book.apply(
        "key_000000000001", _record(secret, revoked=datetime.now(UTC) + timedelta(hours=1)).model_dump_json().encode()
    )
    assert book.authenticate(secret).key_id == "key_000000000001"
    book.apply("key_000000000001", None)
    with pytest.raises(Unauthenticated):
        book.authenticate(secret)
    # A record that does not parse is dropped, so its key is refused, not honoured with stale rights.
    book.put(_record(secret))
    book.apply("key_000000000001", b"{not json")
    with pytest.raises(Unauthenticated):
        book.authenticate(secret)
    # Usage entries share the bucket and are not records.
    book.apply("seen.key_000000000001", b"1700000000.0")


def test_each_role_has_what_docs_say_and_a_refusal_names_the_permission_and_roles_that_have_it() -> None:
    viewer = Principal(tenant="acme", key_id="key_1", role="viewer", name="dash")
    assert viewer.allows("models.read") and not viewer.allows("datasets.write")
    assert not viewer.allows(access.PREDICT)
    with pytest.raises(PermissionDenied) as err:
        viewer.require("models.promote", "/lepton.registry.v1.RegistryService/SetAlias", "model/churn")
    text = str(err.value)
    assert "SetAlias needs the permission models.promote on model/churn" in text
    assert "role viewer" in text and "deployer" in text and "admin" in text
    assert ROLES["inference"] == {access.PREDICT, access.AUTHENTICATED}
    assert "deployments.write" not in ROLES["editor"] and "datasets.write" not in ROLES["deployer"]
    assert "keys.manage" in ROLES["admin"] and access.ANY_TENANT not in ROLES["admin"]
    assert ROLES["admin"] < ROLES["operator"]
    with pytest.raises(InvalidArgument, match="not a role"):
        access.check_role("root")


def test_a_grant_gives_its_role_on_its_resource_only() -> None:
    p = Principal(tenant="acme", key_id="key_1", role="viewer", grants=(("model/churn", "deployer"),))
    assert p.allows("models.promote", "model/churn")
    assert not p.allows("models.promote", "model/other")
    assert not p.allows("models.promote")
    # A model grant gives nothing on datasets, even of the role's permissions.
    assert not p.allows("deployments.write", "model/churn")
    with pytest.raises(InvalidArgument) as err:
        check_grants([("model/churn", "admin")])
    assert err.value.field == "grants[0].role"
    with pytest.raises(InvalidArgument) as err:
        check_grants([("cluster/x", "viewer")])
    assert err.value.field == "grants[0].resource"


def test_a_rule_names_the_resource_its_request_names() -> None:
    rule = Rule("models.promote", "model/{model_name}")
    assert rule.resource_of(registry_pb2.SetAliasRequest(model_name="churn", alias="champion")) == "model/churn"
    assert rule.resource_of(registry_pb2.SetAliasRequest()) == ""
    assert Rule("datasets.read").resource_of(data_pb2.ListDatasetsRequest()) == ""
    with pytest.raises(ValueError, match="not a permission"):
        Rule("datasets.destroy")


@pytest.fixture
def trainer_seed(tmp_path: Path) -> tuple[Path, str]:
    seed = nats_identity.new_seed()
    path = tmp_path / "trainer.nk"
    nats_identity.write_private(path, seed)
    return path, nats_identity.public_key(seed)


def test_a_service_token_carries_the_callers_principal_and_nothing_forges_one(trainer_seed: tuple[Path, str]) -> None:
    path, public = trainer_seed
    signer = ServiceSigner("trainer", path)
    verifier = ServiceVerifier({"trainer": public})
    caller = Principal(tenant="acme", key_id="key_1", role="editor", name="ci", grants=(("model/a", "viewer"),))
    seen = verifier.verify(signer.token(caller))
    assert (seen.tenant, seen.key_id, seen.role, seen.via, seen.grants) == (
        "acme",
        "key_1",
        "editor",
        "trainer",
        (("model/a", "viewer"),),
    )

    token = signer.token(caller)
    body, _, signature = token.partition(".")
    claims = json.loads(access.base64.urlsafe_b64decode(body))
    # Another tenant or a higher role in the claims breaks the signature.
    for change in ({"ten": "other"}, {"role": "operator"}):
        forged = access.base64.urlsafe_b64encode(json.dumps({**claims, **change}).encode()).decode()
        with pytest.raises(Unauthenticated, match="signature"):
            verifier.verify(f"{forged}.{signature}")
    # A key pair of its own, named as the trainer, is not the trainer.
    other = Path(str(path) + ".other")
    nats_identity.write_private(other, nats_identity.new_seed())
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(ServiceSigner("trainer", other).token(caller))
    with pytest.raises(Unauthenticated, match="not a service this one trusts"):
        ServiceVerifier({}).verify(token)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(signer.token(caller, ttl_s=-1))
    with pytest.raises(Unauthenticated, match="malformed"):
        verifier.verify("not-a-token")
    assert time.time() < claims["exp"] <= time.time() + access.TOKEN_TTL_S


def test_a_bootstrap_secret_file_must_be_private_and_long(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap"
    path.write_text(new_secret() + "\n")
    path.chmod(0o644)
    with pytest.raises(InvalidArgument, match="chmod 600"):
        access.read_secret_file(path, "bootstrap_key_file")
    path.chmod(0o600)
    assert access.read_secret_file(path, "bootstrap_key_file").startswith("lep_")
    path.write_text("short")
    with pytest.raises(InvalidArgument, match="at least 32"):
        access.read_secret_file(path, "bootstrap_key_file")


async def test_ensure_key_finds_the_record_of_a_secret_among_usage_entries(nc: NATS) -> None:
    """The bucket also holds when keys were last used (``seen.<id>``): they are no records to read."""
    kv = await nc.jetstream().key_value(access.KEYS_BUCKET)
    secret = new_secret()
    first = await access.ensure_key(kv, secret, tenant="acme", role="viewer", name="ensure-test")
    await kv.put(access.seen_key(first.id), str(time.time()).encode())
    again = await access.ensure_key(kv, secret, tenant="acme", role="viewer", name="ensure-test")
    assert again.id == first.id and again.digest == digest(secret)
    with pytest.raises(InvalidArgument, match="tenant"):
        await access.ensure_key(kv, new_secret(), tenant="evil.>", role="viewer", name="x")
