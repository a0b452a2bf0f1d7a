"""Console units that need no platform: the catalogues, sessions, settings, charts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lepton.events.v1 import events_pb2
from pydantic import ValidationError

import lepton_ai as la
from lepton_ai.jobs import STATES
from lepton_console import i18n
from lepton_console.charts import column_chart
from lepton_console.sessions import Sessions
from lepton_console.settings import ConsoleSettings
from lepton_console.training import JobCurve, parse_params, update
from lepton_console.web import _safe_next

PACKAGE = Path(i18n.__file__).parent


def test_both_catalogues_have_the_same_keys() -> None:
    assert set(i18n.EN) == set(i18n.ZH)
    for key in i18n.EN:
        fields_en = set(re.findall(r"{(\w+)}", i18n.EN[key]))
        fields_zh = set(re.findall(r"{(\w+)}", i18n.ZH[key]))
        assert fields_en == fields_zh, key


def test_every_message_the_pages_use_is_in_the_catalogues() -> None:
    used: set[str] = set()
    for path in [*PACKAGE.glob("templates/*.html"), *PACKAGE.glob("*.py")]:
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']""", path.read_text()))
    used |= {f"dataset.{stat}" for stat in ("count", "nulls", "distinct", "min", "max", "mean", "std")}
    used |= {"signin.wrong_key", "signin.unavailable", "error.not_found", "error.forbidden", "error.unavailable"}
    used = {key for key in used if not key.endswith(".")}  # a prefix completed in the template: below
    used |= {f"job.state.{state}" for state in (*STATES, "unknown")} | {"error.bad_form"}
    assert used, "no t(...) calls found: the pattern is wrong"
    assert used <= set(i18n.EN), sorted(used - set(i18n.EN))


@pytest.mark.parametrize(
    ("cookie", "accept", "lang"),
    [
        (None, "zh-TW,zh;q=0.9,en;q=0.8", "zh-CN"),
        (None, "zh", "zh-CN"),
        (None, "en-US,zh-CN;q=0.5", "en"),
        (None, None, "en"),
        ("en", "zh-CN", "en"),
        ("zh-CN", "en", "zh-CN"),
        ("fr", "zh-CN", "zh-CN"),
    ],
)
def test_language_from_cookie_then_accept_language(cookie: str | None, accept: str | None, lang: str) -> None:
    assert i18n.negotiate(cookie, accept) == lang


class FakeClosable:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_session_expires_after_its_idle_time_and_its_key_is_dropped() -> None:
    now = [1000.0]
    sessions = Sessions(idle_s=60.0, clock=lambda: now[0])
    client, stream = FakeClosable(), FakeClosable()
    session = sessions.create(client, principal=None)  # type: ignore[arg-type]
    session.streams.add(stream)
    assert len(session.id) >= 43 and len(session.csrf) >= 43  # 256 bits, base64url
    now[0] += 59
    assert sessions.get(session.id) is session  # use restarts the idle time
    now[0] += 59
    assert sessions.get(session.id) is session
    now[0] += 61
    assert sessions.get(session.id) is None
    assert len(sessions) == 0 and client.closed and stream.closed
    assert sessions.get("") is None and sessions.get("made-up") is None


def test_idle_sessions_are_swept_when_others_sign_in() -> None:
    now = [0.0]
    sessions = Sessions(idle_s=10.0, clock=lambda: now[0])
    old = FakeClosable()
    sessions.create(old, principal=None)  # type: ignore[arg-type]
    now[0] = 11
    sessions.create(FakeClosable(), principal=None)  # type: ignore[arg-type]
    assert len(sessions) == 1 and old.closed


def test_settings_refuse_plaintext_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"host: 0\.0\.0\.0 reaches beyond this machine"):
        ConsoleSettings(host="0.0.0.0")
    with pytest.raises(ValidationError, match="set both"):
        ConsoleSettings(tls_cert_file=str(tmp_path / "c.pem"))
    assert ConsoleSettings(host="0.0.0.0", insecure=True).insecure
    tls = ConsoleSettings(host="0.0.0.0", tls_cert_file="c.pem", tls_key_file="k.pem")
    assert tls.host == "0.0.0.0"
    assert ConsoleSettings().host == "127.0.0.1"


def test_settings_come_from_the_console_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_CONSOLE_PORT", "9123")
    monkeypatch.setenv("LEPTON_CONSOLE_PLATFORM_URL", "grpcs://lepton.example:443")
    settings = ConsoleSettings()
    assert (settings.port, settings.platform_url) == (9123, "grpcs://lepton.example:443")


def test_a_histogram_is_labelled_for_screen_readers_and_escapes_names() -> None:
    t = i18n.translator("en")
    profile: dict[str, Any] = {"histogram": {"edges": [0.0, 1.0, 2.0, 3.0], "counts": [1, 5, 2]}}
    svg = str(column_chart("chart-1", "<b>age</b>", profile, t))
    assert svg.startswith('<svg class="chart" id="chart-1" role="img"')
    assert 'aria-label="Histogram of &lt;b&gt;age&lt;/b&gt;"' in svg
    assert "<title>Histogram of &lt;b&gt;age&lt;/b&gt;</title>" in svg
    assert "3 bins from 0 to 3; the fullest holds 5 rows (1 to 2)." in svg
    assert svg.count('<rect class="bar"') == 3 and "<b>" not in svg and "style=" not in svg


def test_categorical_columns_show_their_top_values_in_chinese() -> None:
    svg = str(column_chart("c", "city", {"top_values": {"rome": 2, "oslo": 7}}, i18n.translator("zh-CN")))
    assert 'aria-label="city 最常见的值"' in svg and "最常见的是 oslo，出现 7 次" in svg  # noqa: RUF001
    assert column_chart("c", "empty", {"count": 0}, i18n.translator("en")) is None


def _progress(job_id: str, epoch: int, loss: float, seq: int) -> la.PlatformEvent:
    data = events_pb2.TrainingProgress(stage=f"epoch {epoch}/3", progress=epoch / 3, epoch=epoch, epochs=3)
    data.metrics.update({"epoch": float(epoch), "epochs": 3.0, "train_loss": loss, "val_metric": 0.5})
    data.lineage.training_job_id = job_id
    return la.PlatformEvent(
        id=f"p{seq}", type="ai.lepton.training.progress.v1", name="training.progress", source="/lepton/trainer",
        time=datetime.now(UTC), subject=job_id, trace_id="", tenant="t", data=data,
    )  # fmt: skip


def test_a_job_s_loss_curve_counts_each_progress_event_once_and_only_its_own() -> None:
    curve = JobCurve("job_1")
    t = i18n.translator("en")
    assert curve.svg(t) is None
    lines = [curve.add(e, t) for e in (_progress("job_1", 1, 4.0, 1), _progress("job_1", 2, 2.0, 2))]
    assert curve.add(_progress("job_1", 2, 2.0, 2), t) is None  # a replay's repeat adds nothing
    assert curve.add(_progress("job_2", 3, 99.0, 3), t) is None  # another job's
    assert [line.text for line in curve.log if line] == [
        "epoch 1/3 · train_loss 4, val_metric 0.5",
        "epoch 2/3 · train_loss 2, val_metric 0.5",
    ]
    assert lines == curve.log
    svg = str(curve.svg(t))
    assert svg.startswith('<svg class="chart" id="job-curve" role="img"')
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert "2 epochs of train_loss; the last: train_loss 2." in svg  # losses only: val_metric has another scale
    assert svg.count("<polyline") == 1 and "99" not in svg and "epoch 1" in svg and "epoch 2" in svg
    message = json.loads(update(None, curve, _progress("job_1", 2, 2.0, 4), t, curve.log[-1]).decode()[6:])
    assert message["percent"] == "67%" and message["stage"] == "epoch 2/3" and "state" not in message
    assert message["log"]["text"] == "epoch 2/3 · train_loss 2, val_metric 0.5"


@pytest.mark.parametrize(
    ("text", "params", "space"),
    [
        ("", {}, {}),
        ("alpha=0.5, fit_intercept=false", {"alpha": "0.5", "fit_intercept": "false"}, {}),
        ("alpha=0.1|1|10\nmax_iter=50", {"max_iter": "50"}, {"alpha": ["0.1", "1", "10"]}),
    ],
)
def test_training_parameters_from_the_form(text: str, params: dict[str, str], space: dict[str, list[str]]) -> None:
    assert parse_params(text) == (params, space)


@pytest.mark.parametrize("text", ["alpha", "alpha=", "Alpha=1", "alpha=1|", "=3", "a b=1"])
def test_a_malformed_training_parameter_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="expected name=value"):
        parse_params(text)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("/datasets?q=x", "/datasets?q=x"), ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil", "/")],
)
def test_forms_go_back_only_to_local_paths(given: str, kept: str) -> None:
    assert _safe_next(given) == kept
