"""``make lab``: JupyterLab from the pinned environment opens a chapter's ``.md`` as a notebook.

The server is started headless through the Makefile target on a free port, and the chapter
source is requested through the Jupyter contents API, as the Lab front end does when a reader
double-clicks ``notebooks/NN_slug.md``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_make_lab_opens_a_chapter_md_as_a_paired_notebook(tmp_path):
    chapter = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md"))[0]
    twin = chapter.with_suffix(".ipynb")
    stamps = (chapter.stat().st_mtime_ns, twin.stat().st_mtime_ns)
    port, token = _free_port(), secrets.token_hex(16)
    flags = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        ["make", "-s", "--no-print-directory", "lab", f"PORT={port}", f"LAB_FLAGS={flags}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, "make lab exited:\n" + (tmp_path / "lab.log").read_text()
            try:
                _get(f"{base}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert time.monotonic() < deadline, "JupyterLab did not answer:\n" + (tmp_path / "lab.log").read_text()
                time.sleep(1)
        rel = chapter.relative_to(ROOT).as_posix()
        model = _get(f"{base}/api/contents/{rel}?type=notebook&content=1", token)
        assert model["type"] == "notebook" and model["format"] == "json"
        nb = model["content"]
        assert nb["metadata"]["jupytext"]["formats"] == "ipynb,md:myst", "the .md must stay paired with its .ipynb"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert any("parameters" in c["metadata"].get("tags", []) for c in code)
        # the outputs come from the paired .ipynb: the .md alone has none
        assert any(c.get("outputs") for c in code), "outputs of the paired .ipynb were not loaded"
        assert "python3" in _get(f"{base}/api/kernelspecs", token)["kernelspecs"]
        assert (chapter.stat().st_mtime_ns, twin.stat().st_mtime_ns) == stamps, "opening must not write"
    finally:
        if server.poll() is None:  # stop the server we started (its own process group)
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
