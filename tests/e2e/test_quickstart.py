"""The README's quickstart, as a new user runs it: `python -m service` on the embedded defaults
(what `make serve` starts: SmolLM2-135M-Instruct and the demo adapter), then the README's curl
requests, exactly as written but for the port, answer what the README shows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from core.base.folders import SMOLLM2
from tests.ports import free_port
from tests.service_process import server_process

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_curl() -> tuple[str, dict[str, str]]:
    """The first curl block and the answers the README shows for it (the ```text block after
    it: one ``MODEL ANSWER`` line per request, the answer with its surrounding spaces trimmed)."""
    found = re.search(r"```bash\n(curl .*?)```.*?```text\n(.*?)```", README.read_text(), re.S)
    assert found, "the README shows no curl example followed by its answers"
    lines = (line.split(maxsplit=1) for line in found[2].splitlines())
    return found[1], {model: answer for model, answer in lines}


def json_documents(text: str) -> list[dict]:
    """The JSON objects curl printed one after another."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
        at = len(text) - len(text[at:].lstrip())
    return documents


def test_serve_on_embedded_defaults_and_the_readme_requests_answer_as_shown(tmp_path, smollm2_dir):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    home = tmp_path / "home"  # stands in for ~/.loraloop
    env["LORALOOP_DATA_DIR"] = str(home)
    # The first start's conversion of the base, done once per test session: linked where the
    # data directory keeps its models, so the server finds it converted.
    (home / "models").mkdir(parents=True)
    (home / "models" / SMOLLM2).symlink_to(smollm2_dir)
    # Only the data directory is set: the server runs on its defaults, as `make serve` does
    # (log level info included); ready once /readyz answers (SmolLM2 loads slowly on busy CI).
    with server_process(env, port, log_level="info") as server:
        try:
            command, shown = readme_curl()
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr
            answers = {
                response["model"]: response["choices"][0]["message"]["content"].strip()
                for response in json_documents(result.stdout)
            }
            assert answers == shown  # "base" and "demo@1", greedy, as the README shows them
        finally:
            server.process.send_signal(signal.SIGINT)
            try:
                server.process.wait(timeout=120)  # a busy machine stops the server, worker and engine slowly
            except subprocess.TimeoutExpired:
                server.process.kill()
    assert server.process.returncode == 0
