"""``make ui``: the printed addresses open the runs table of a study in MLflow's web app, as a
newcomer's browser shows it (headless Chromium), and bad input is refused before any server
starts."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
from conftest import ROOT, free_port, runs_in

from harness import ui

CHROMIUM = shutil.which("chromium")
READY_SECONDS = 60


def test_each_study_gets_the_address_of_its_training_view():
    lines = ui.addresses("127.0.0.1", 5001, [("3", "smoke"), ("7", "lecture")])
    assert lines == [
        "smoke: http://127.0.0.1:5001/#/experiments/3?workflowType=machine_learning",
        "lecture: http://127.0.0.1:5001/#/experiments/7?workflowType=machine_learning",
    ]


@pytest.mark.parametrize(
    ("args", "key"),
    [(["--port", "70000"], "port"), (["--store", "file:///tmp/mlruns"], "tracking.uri")],
)
def test_bad_input_is_refused_before_a_server_starts(args, key):
    done = subprocess.run(
        [sys.executable, "-m", "harness.ui", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2 and done.stderr.startswith(f"error: {key}=")
    assert len(done.stderr.splitlines()) == 1 and "MLflow's web app" not in done.stdout


def wait_until_it_answers(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "the MLflow web app exited"
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"nothing answered at {url} within {READY_SECONDS} s")


# The expander of a parent run's row in MLflow 3.17's runs table (its component id)
EXPANDER = '[data-component-id$="runs_cells_runnamecellrenderer.tsx_46"]'


async def evaluate(socket, expression: str, number: list[int]):
    """``expression``'s value in the page, through the DevTools protocol."""
    number[0] += 1
    params = {"expression": expression, "returnByValue": True}
    await socket.send_json({"id": number[0], "method": "Runtime.evaluate", "params": params})
    async for message in socket:
        answer = message.json()
        if answer.get("id") == number[0]:
            return answer["result"]["result"].get("value")
    raise AssertionError("the browser closed its connection")


async def until(socket, expression: str, number: list[int], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await evaluate(socket, expression, number):
        assert time.monotonic() < deadline, f"never true in the page: {expression}"
        await asyncio.sleep(0.5)


async def browse(url: str, names: list[str]) -> tuple[str, str]:
    """What a person sees at ``url`` in Chromium (headless, driven over its DevTools port):
    the page's text once the runs table is there, and again after a click on the expander of
    the sweep's parent run, once every name in ``names`` shows."""
    import aiohttp

    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu"]
        command += [f"--user-data-dir={profile}", "--window-size=2400,1400"]
        browser = subprocess.Popen(
            [*command, f"--remote-debugging-port={port}", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as session:
                wait_until_it_answers(f"http://127.0.0.1:{port}/json/version", browser)
                async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                    pages = [t for t in await answer.json() if t["type"] == "page"]
                address = pages[0]["webSocketDebuggerUrl"]
                async with session.ws_connect(address, max_msg_size=0) as socket:
                    number, text = [0], "document.body.innerText"
                    await until(socket, f"{text}.includes('matching runs')", number)
                    await until(socket, f"!!document.querySelector('{EXPANDER}')", number)
                    before = await evaluate(socket, text, number)
                    await evaluate(socket, f"document.querySelector('{EXPANDER}').click()", number)
                    shown = " && ".join(f"{text}.includes({name!r})" for name in names)
                    await until(socket, shown, number)
                    return before, await evaluate(socket, text, number)
        finally:
            browser.terminate()
            browser.wait(timeout=30)


@pytest.mark.slow  # about a minute: a sweep, MLflow's web app and a browser start
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_printed_address_opens_the_runs_table_of_a_study(tmp_path, store_uri):
    subprocess.run(
        [sys.executable, "-m", "harness.sweep", "smoke", f"tracking.uri={store_uri}"]
        + [f"hydra.sweep.dir={tmp_path}/m"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    names = [
        run.info.run_name for run in runs_in(store_uri, "smoke") if "role" not in run.data.tags
    ]
    port = free_port()
    command = [sys.executable, "-m", "harness.ui", "--store", store_uri, "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        printed = [server.stdout.readline() for _ in range(2)]
        (address,) = re.findall(r"smoke: (http://\S+)", "".join(printed))
        assert address.endswith("?workflowType=machine_learning")
        wait_until_it_answers(f"http://127.0.0.1:{port}/health", server)
        before, after = asyncio.run(browse(address, names))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "run name" in before.lower() and re.search(r"\b9\s+matching runs", before)
    assert "smoke-sweep-" in before and not any(name in before for name in names)
    assert len(names) == 8 and all(name in after for name in names)
    assert "gabor_toy (" in after and "train" in after.lower()  # Dataset: name (digest), split
    assert "harness.sweep" in after  # the Source column
