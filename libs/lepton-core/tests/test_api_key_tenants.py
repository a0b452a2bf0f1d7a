"""Tenants are checked when the API keys are loaded: a key of a tenant that is not a name stops the service."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from lepton_core.names import NAME_GRAMMAR
from lepton_core.settings import ServiceSettings

SECRET = "do-not-print-" + "k" * 24


class ExampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEPTON_EXAMPLE_", extra="ignore")


@pytest.mark.parametrize("tenant", ["", "acme.>", "a*", ">", "a--b", "Acme", "a b", "x\n", "a" * 65])
def test_a_tenant_that_is_not_a_name_is_refused_naming_the_setting_never_the_key(
    tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEPTON_EXAMPLE_API_KEYS", json.dumps({"other-key": "ok", SECRET: tenant}))
    with pytest.raises(ValidationError) as err:
        ExampleSettings()
    text = str(err.value)
    assert "LEPTON_EXAMPLE_API_KEYS: the tenant of key 2 of 2" in text and NAME_GRAMMAR in text, text
    assert SECRET not in text and "other-key" not in text


def test_names_are_tenants(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {SECRET: "acme", "other-key": "tenant_2-b"}
    monkeypatch.setenv("LEPTON_EXAMPLE_API_KEYS", json.dumps(keys))
    assert ExampleSettings().api_keys == keys


def test_a_key_that_is_not_json_text_is_not_quoted_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_EXAMPLE_API_KEYS", json.dumps({SECRET: 7}))
    with pytest.raises(ValidationError) as err:
        ExampleSettings()
    assert SECRET not in str(err.value) and "api_keys" in str(err.value)
