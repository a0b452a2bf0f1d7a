"""The progress bars in Jupyter: a notebook runs on a real IPython kernel against the platform.

nbclient executes the notebook the way JupyterLab would: every message the kernel sends
is recorded, so the test sees each redraw of the bar (an ipywidgets Output widget that
rich fills), not only the notebook's final state.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client import KernelManager
from lepton.trainer.v1 import trainer_pb2
from nbclient import NotebookClient

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform

KERNEL = "lepton-test-venv"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PERCENT = re.compile(r"(\d{1,3})%")

CELLS = [
    # 0: the kernel is this venv's python and reaches the platform through its environment
    "import sys\n"
    "import lepton_ai as la\n"
    "from sklearn.datasets import load_breast_cancer\n"
    "client = la.Client()  # LEPTON_URL and LEPTON_API_KEY\n"
    "print(sys.executable)",
    # 1: an upload shows its own bar
    'dataset = client.datasets.upload(load_breast_cancer(as_frame=True).frame, name="nb-cancer")',
    # 2: the bar under the cell advances per epoch; the estimator is the cell's value, as in scikit-learn
    'model = la.models.MLP(task="classification", epochs=40, batch_size=4, early_stopping_patience=0)\n'
    'model.fit(dataset, model_name="nb-mlp")',
    # 3
    "print(f\"registered {model.model_name} v{model.version} accuracy {model.metrics['accuracy']:.3f}\")",
    # 4: progress=False draws nothing
    'quiet = la.models.LogisticRegression(max_iter=5000).fit(dataset, model_name="nb-quiet", progress=False)\n'
    'print(f"registered {quiet.model_name} v{quiet.version}")',
]


class RecordingClient(NotebookClient):
    """nbclient's executor, keeping every message the kernel sent, per cell."""

    def __init__(self, nb: nbformat.NotebookNode, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self.messages: list[tuple[int, dict[str, Any]]] = []

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.messages.append((cell_index, msg))
        return super().process_message(msg, cell, cell_index)


def write_kernelspec(root: Path) -> Path:
    """A kernel spec for this venv's python (not whatever `python3` kernel the machine has)."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return root


def frames(client: RecordingClient, cell: int, label: str) -> list[str]:
    """The text of every redraw of the bar labelled ``label`` in ``cell``, in order."""
    out = []
    for index, msg in client.messages:
        text = msg["content"].get("data", {}).get("text/plain", "")
        if index == cell and msg["msg_type"] == "display_data" and text.startswith(label):
            out.append(text)
    return out


@pytest.fixture
def kernel_env(platform: EmbeddedPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Kernels of this venv, started with the platform's address and key in their environment."""
    monkeypatch.setenv("JUPYTER_PATH", str(write_kernelspec(tmp_path / "jupyter")))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    env = {
        **os.environ,
        "LEPTON_URL": platform.url,
        "LEPTON_API_KEY": platform.api_key,
        "IPYTHONDIR": str(tmp_path / "ipython"),  # no profile or startup files of this machine
    }
    if platform.ca_file:  # as lepton_cli passes it
        env["LEPTON_TLS_CA_FILE"] = str(platform.ca_file)
    return env


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_notebook_shows_live_progress_bars(
    platform: EmbeddedPlatform, kernel_env: dict[str, str], tmp_path: Path
) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = RecordingClient(nb, kernel_name=KERNEL, timeout=240, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=kernel_env)  # raises CellExecutionError if a cell fails

    outputs = [cell.outputs for cell in nb.cells]
    assert not [o for cell in outputs for o in cell if o.output_type == "error"]
    assert outputs[0][0].text.strip() == sys.executable

    # The bar is a widget under the cell, redrawn while the job ran: several rising values, then 100%.
    widgets = nb.metadata.widgets[WIDGET_STATE]["state"]
    shown = [o.data[WIDGET_VIEW]["model_id"] for o in outputs[2] if o.output_type == "display_data"]
    assert len(shown) == 1 and widgets[shown[0]]["model_name"] == "OutputModel", outputs[2]
    drawn = frames(client, 2, "train mlp_classifier")
    values = [int(PERCENT.findall(f)[-1]) for f in drawn]
    assert values == sorted(values) and len({v for v in values if 0 < v < 100}) >= 3, values
    assert re.search(r"epoch \d+/40", "\n".join(drawn)) and values[-1] == 100, drawn[-1]
    # What a saved notebook keeps: the widget's last frame, the finished bar.
    last = widgets[shown[0]]["state"]["outputs"][-1]["data"]["text/plain"]
    assert last.startswith("train mlp_classifier: done") and "100%" in last, last
    assert [o.output_type for o in outputs[2]] == ["display_data", "execute_result"]
    assert outputs[2][1].data["text/plain"].startswith("MLP(")

    uploaded = frames(client, 1, "upload nb-cancer")
    assert uploaded and [o.output_type for o in outputs[1]] == ["display_data"]

    with la.Client(platform.api_key, platform.url) as sdk:
        version = sdk.models.version("nb-mlp").version
    assert re.fullmatch(rf"registered nb-mlp v{version} accuracy 0\.\d+\n", outputs[3][0].text), outputs[3]
    # progress=False: the printed line only, no widget, nothing drawn
    assert [o.output_type for o in outputs[4]] == ["stream"] and "registered nb-quiet v" in outputs[4][0].text
    assert not frames(client, 4, "train")
    print(f"{len(drawn)} frames of the training bar: {values}")


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_interrupting_the_kernel_asks_and_cancels_the_job(
    platform: EmbeddedPlatform, kernel_env: dict[str, str]
) -> None:
    """The notebook's Ctrl-C (Kernel > Interrupt) asks in an input box, like the terminal's prompt."""
    km = KernelManager(kernel_name=KERNEL)
    km.start_kernel(env=kernel_env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        code = (
            "import lepton_ai as la\n"
            "from sklearn.datasets import load_breast_cancer\n"
            "client = la.Client()\n"
            'dataset = client.datasets.upload(load_breast_cancer(as_frame=True).frame, name="nb-cancer")\n'
            'la.models.MLP(task="classification", epochs=5000, batch_size=4, early_stopping_patience=0).fit(\n'
            '    dataset, model_name="nb-interrupted")'
        )
        msg_id = kc.execute(code, allow_stdin=True)
        while True:  # until the bar shows epochs: the job is running
            msg = kc.get_iopub_msg(timeout=120)
            text = msg["content"].get("data", {}).get("text/plain", "")
            if msg["msg_type"] == "display_data" and re.search(r"epoch \d+/5000", text):
                break
        km.interrupt_kernel()
        request = kc.get_stdin_msg(timeout=30)
        prompt = re.fullmatch(r"cancel training job (\S+?)\? \[Y/n\] ", request["content"]["prompt"])
        assert request["msg_type"] == "input_request" and prompt, request["content"]
        with la.Client(platform.api_key, platform.url) as sdk:
            assert sdk.jobs.get(prompt.group(1)).state == trainer_pb2.JOB_STATE_RUNNING
            kc.input("y")
            reply = kc.get_shell_msg(timeout=60)
            while reply["parent_header"].get("msg_id") != msg_id:  # e.g. a late kernel_info_reply of wait_for_ready
                reply = kc.get_shell_msg(timeout=60)
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "LeptonError"
            assert "was cancelled" in reply["content"]["evalue"]
            assert list(sdk.jobs.watch(prompt.group(1)))[-1].state == trainer_pb2.JOB_STATE_CANCELLED
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        with la.Client(platform.api_key, platform.url) as sdk:  # after a failure: no minutes of epochs left
            for job in sdk.jobs.list("running"):
                if job.model_name == "nb-interrupted":
                    sdk.jobs.cancel(job.job_id)


def test_scripts_do_not_import_ipython() -> None:
    """Outside a kernel the SDK never imports IPython; an IPython shell without a kernel is no notebook."""
    script = (
        "import sys\n"
        "from lepton_ai import _progress\n"
        "assert not _progress.wanted(None) and 'IPython' not in sys.modules\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance()\n"
        "assert not _progress.in_jupyter()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
