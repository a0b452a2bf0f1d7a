"""The training progress bar in a real terminal: `lepton train` and `model.fit` in a pseudo-terminal.

Each test runs a real MLP training job on the platform and reads what a user's terminal
would show: the bar must advance while the job runs, and Ctrl-C must ask whether to
cancel the job and, answered yes, really cancel it.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest
from lepton.trainer.v1 import trainer_pb2
from sklearn.datasets import load_breast_cancer

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DATASET = "tty-cancer"
#: An MLP whose epochs last long enough for several redraws (rich redraws 10 times a second).
#: Early stopping is off so every epoch runs.
STEADY = {"epochs": "40", "batch_size": "4", "hidden_layers": "64,32", "early_stopping_patience": "0"}
#: Minutes of epochs: only ever cancelled.
ENDLESS = {**STEADY, "epochs": "5000"}
PERCENT = re.compile(r"(\d{1,3})%")
PROMPT = re.compile(r"cancel training job (\S+?)\? \[Y/n\]")

SDK_SCRIPT = """
import sys
import lepton_ai as la

dataset, name, *pairs = sys.argv[1:]
with la.Client() as client:
    model = la.models.MLP(task="classification", **dict(p.split("=", 1) for p in pairs))
    model.fit(client.datasets.get(dataset), model_name=name)
print(f"registered {model.model_name} v{model.version}")
"""


@pytest.fixture(scope="module")
def client(platform: EmbeddedPlatform) -> Iterator[la.Client]:
    with la.Client(platform.api_key, platform.url) as c:
        frame = load_breast_cancer(as_frame=True).frame
        c.datasets.upload(frame, name=DATASET, progress=False)
        yield c


def terminal_env(platform: EmbeddedPlatform) -> dict[str, str]:
    """What `lepton_cli` passes, plus a terminal rich draws live bars on."""
    env = {**os.environ, "LEPTON_URL": platform.url, "LEPTON_API_KEY": platform.api_key, "TERM": "xterm-256color"}
    if platform.ca_file:
        env["LEPTON_TLS_CA_FILE"] = str(platform.ca_file)
    for name in ("NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES"):
        env.pop(name, None)  # would change how rich sees the terminal
    return env


def command(kind: str, name: str, params: dict[str, str]) -> list[str]:
    """`lepton train` or a python script calling `model.fit`, for the same job."""
    pairs = [f"{k}={v}" for k, v in params.items()]
    if kind == "cli":
        cli = str(Path(sys.executable).parent / "lepton")
        return [cli, "train", DATASET, "-a", "mlp_classifier", "--name", name, *(a for p in pairs for a in ("-p", p))]
    return [sys.executable, "-c", SDK_SCRIPT, DATASET, name, *pairs]


@pytest.fixture
def terminal(platform: EmbeddedPlatform, client: la.Client) -> Iterator[Callable[[list[str]], pexpect.spawn]]:
    """Starts a command in a pseudo-terminal (140 columns); cleans up after a failed test."""
    children: list[pexpect.spawn] = []

    def start(argv: list[str]) -> pexpect.spawn:
        child = pexpect.spawn(
            argv[0], argv[1:], env=terminal_env(platform), encoding="utf-8", codec_errors="replace",
            dimensions=(40, 140), timeout=120,
        )  # fmt: skip
        children.append(child)
        return child

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)
    # A failed test must not leave minutes of epochs on the session's trainer.
    for job in [*client.jobs.list("queued"), *client.jobs.list("running")]:
        if job.model_name.startswith("tty-"):
            try:
                client.jobs.cancel(job.job_id)
            except la.FailedPrecondition:
                pass  # it ended meanwhile


def read_bar(child: pexpect.spawn, until: re.Pattern[str]) -> tuple[list[tuple[float, int]], str]:
    """Every percentage the bar shows, with when it arrived, until ``until`` appears; and the text."""
    seen: list[tuple[float, int]] = []
    text: list[str] = []
    while child.expect([PERCENT, until]) == 0:
        seen.append((time.monotonic(), int(child.match.group(1))))
        text += [child.before, child.after]
    return seen, "".join(text)


def assert_advanced(seen: list[tuple[float, int]]) -> None:
    values = [v for _, v in seen]
    assert values, "no progress bar was drawn"
    assert values == sorted(values), f"the bar went backwards: {values}"
    # Distinct values while the job ran, each drawn as it happened (rich redraws the current state only).
    running = sorted({v for v in values if 0 < v < 100})
    assert len(running) >= 3, f"the bar did not advance during the job: {values}"
    assert values[-1] == 100, f"the bar did not finish: {values}"
    first, last = (next(t for t, v in seen if v == x) for x in (running[0], running[-1]))
    assert last > first, "every value arrived at once, not while the job ran"


@pytest.mark.parametrize("kind", ["cli", "sdk"])
def test_the_bar_advances_during_a_real_training_job(
    terminal: Callable[[list[str]], pexpect.spawn], client: la.Client, kind: str
) -> None:
    name = f"tty-{kind}-mlp"
    started = time.monotonic()
    child = terminal(command(kind, name, STEADY))
    # The last thing shown is the registered version: the CLI's table title, the script's print.
    done = re.compile(rf"{name} v(\d+)" if kind == "cli" else rf"registered {name} v(\d+)")
    seen, text = read_bar(child, done)
    version = int(child.match.group(1))
    child.expect(pexpect.EOF)
    assert child.wait() == 0, child.before  # wait: EOF can come a moment before the exit
    epochs = STEADY["epochs"]
    assert re.search(rf"train mlp_classifier: epoch \d+/{epochs}", text), text[-1000:]  # the stage is on the bar
    assert_advanced(seen)
    latest = next(m for m in client.models.list() if m.name == name)
    assert version == latest.latest_version >= 1
    print(f"{kind}: {len(seen)} frames, values {sorted({v for _, v in seen})}, {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("kind", ["cli", "sdk"])
def test_ctrl_c_asks_and_cancels_the_job(
    terminal: Callable[[list[str]], pexpect.spawn], client: la.Client, kind: str
) -> None:
    child = terminal(command(kind, f"tty-{kind}-cancelled", ENDLESS))
    child.expect(r"epoch \d+/5000")  # the job is running: its first epochs are on the bar
    child.sendintr()  # Ctrl-C, through the terminal's line discipline (SIGINT to the foreground group)
    child.expect(PROMPT)
    job_id = child.match.group(1)
    assert client.jobs.get(job_id).state == trainer_pb2.JOB_STATE_RUNNING  # asking cancels nothing yet
    child.sendline("y")
    child.expect(rf"training job {re.escape(job_id)} was cancelled")
    child.expect(pexpect.EOF)
    assert child.wait() == 1
    # The trainer stops the fit: the job ends cancelled (watch returns once it has ended).
    final = list(client.jobs.watch(job_id))[-1]
    assert final.state == trainer_pb2.JOB_STATE_CANCELLED, final


def test_ctrl_c_answered_no_leaves_the_job_running(
    terminal: Callable[[list[str]], pexpect.spawn], client: la.Client
) -> None:
    """Answering no stops waiting (the shell gets its prompt back); the job runs on."""
    child = terminal(command("cli", "tty-cli-kept", ENDLESS))
    child.expect(r"epoch \d+/5000")
    child.sendintr()
    child.expect(PROMPT)
    job_id = child.match.group(1)
    child.sendline("n")
    child.expect(rf"training job {re.escape(job_id)} keeps running")
    child.expect(pexpect.EOF)
    assert child.wait() == 130  # interrupted, as the shell reports a Ctrl-C
    assert client.jobs.get(job_id).state == trainer_pb2.JOB_STATE_RUNNING
    client.jobs.cancel(job_id)  # it would run for minutes
    assert list(client.jobs.watch(job_id))[-1].state == trainer_pb2.JOB_STATE_CANCELLED


def test_jobs_watch_draws_the_same_bar_for_a_job_started_elsewhere(
    terminal: Callable[[list[str]], pexpect.spawn], client: la.Client, platform: EmbeddedPlatform
) -> None:
    import subprocess

    name = "tty-watch-mlp"
    # Trained by another process (no terminal: no bar there). Not a thread of this one: forking
    # the pty while a thread is inside a gRPC call can crash the child.
    training = subprocess.Popen(
        command("cli", name, STEADY), env=terminal_env(platform), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        job = None
        while job is None and time.monotonic() < deadline:
            job = next((j for j in client.jobs.list() if j.model_name == name), None)
            time.sleep(0.1)
        assert job is not None, "the job did not show up"
        child = terminal([str(Path(sys.executable).parent / "lepton"), "jobs", "watch", job.job_id])
        seen, text = read_bar(child, pexpect.EOF)
        status = child.wait()  # EOF can come a moment before the exit: wait for it rather than close(force)
        assert training.wait(120) == 0, training.stderr.read() if training.stderr else ""
    finally:
        if training.poll() is None:
            training.kill()
    assert status == 0, text[-1000:]
    assert f"job {job.job_id}: epoch" in text, text[-1000:]
    values = [v for _, v in seen]
    assert values == sorted(values) and values[-1] == 100, values
    assert len({v for v in values if 0 < v < 100}) >= 2, values
