"""The `loraloop` CLI end to end against a live server, through click's runner: --json on
stdout, messages on stderr, exit codes 0 / 1 (API error) / 2 (usage), and the environment
variables the SDK reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from loraloop_client.cli import cli

from tests.adapters import make_adapter
from tests.api_keys import ADMIN_KEY, FEEDBACK_KEY


@pytest.fixture
def run(base_url: str):
    def invoke(*args: str, key: str = ADMIN_KEY, input: str | None = None):
        runner = CliRunner()
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False,
                             env={"LORALOOP_BASE_URL": base_url, "LORALOOP_API_KEY": key})
    return invoke


def test_adapters_ls_and_show_print_json_on_stdout(run):
    listed = run("adapters", "ls", "--json")
    assert listed.exit_code == 0, listed.stderr
    names = {a["name"] for a in json.loads(listed.stdout)}
    assert {"summarize", "support", "judge"} <= names
    shown = run("--json", "adapters", "show", "summarize")  # --json also works before the command
    assert json.loads(shown.stdout)["aliases"] == {"production": 1}
    human = run("adapters", "show", "summarize")
    assert human.exit_code == 0 and "production" in human.stdout


def test_push_then_promote_moves_production_by_compare_and_swap(run, tmp_path, server_settings):
    folder = make_adapter(Path(server_settings.base_model), tmp_path / "a", seed=21)
    first = run("adapters", "push", "cli-pub", str(folder), "--alias", "production", "--json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["version"] == 1
    assert run("adapters", "push", "cli-pub", str(folder)).stdout.strip() == "published cli-pub@2"

    promoted = run("adapters", "promote", "cli-pub", "2")
    assert promoted.exit_code == 0 and promoted.stdout.strip() == "cli-pub@production: 1 → 2"
    run("adapters", "push", "cli-pub", str(folder), "--alias", "candidate")
    assert run("adapters", "promote", "cli-pub", "candidate").stdout.strip() == "cli-pub@production: 2 → 3"
    lost = run("adapters", "promote", "cli-pub", "1", "--expected", "1")
    assert lost.exit_code == 1 and "error: 409" in lost.stderr and lost.stdout == ""
    assert json.loads(run("adapters", "show", "cli-pub", "--json").stdout)["aliases"] == {"production": 3, "candidate": 3}


def test_load_pin_and_unload(run):
    assert json.loads(run("adapters", "load", "summarize@1", "--json").stdout)["tier"] == "slot"
    assert run("adapters", "pin", "summarize@1").stdout.strip() == "summarize@1: version 1 pinned"
    assert run("adapters", "pin", "summarize@1", "--unpin").exit_code == 0
    assert run("adapters", "unload", "summarize@1").stdout.strip() == "summarize@1: unloaded"


def test_feedback_post_import_export_and_stats(run, tmp_path):
    posted = run("feedback", "post", "cli-fb", "--choice", "1", "--prompt", "Say hi",
                 "--candidate", "Go away.", "--candidate", "Hi there!", "--json", key=FEEDBACK_KEY)
    assert posted.exit_code == 0, posted.stderr
    assert json.loads(posted.stdout)["choice"] == 1
    file = tmp_path / "prefs.jsonl"
    file.write_text(json.dumps({"prompt": "Q?", "chosen": "yes", "rejected": "no"}) + "\n")
    imported = run("feedback", "import", str(file), "--use-case", "cli-fb", key=FEEDBACK_KEY)
    assert imported.stdout.strip() == "1 accepted, 0 duplicates, 0 rejected (trl)"

    exported = run("feedback", "export", "--use-case", "cli-fb", "--format", "trl", key=FEEDBACK_KEY)
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {r["chosen"] for r in rows} == {"Hi there!", "yes"} and "2 rows" in exported.stderr
    stats = json.loads(run("feedback", "stats", "--use-case", "cli-fb", "--json", key=FEEDBACK_KEY).stdout)
    assert stats["use_cases"][0]["feedback"] == 2
    assert "cli-fb" in run("feedback", "stats", "--use-case", "cli-fb", key=FEEDBACK_KEY).stdout


def test_generate_streams_what_the_openai_api_completes(run, base_url):
    streamed = run("generate", "summarize", "The weather is", "--max-tokens", "6", "--temperature", "0")
    assert streamed.exit_code == 0, streamed.stderr
    whole = json.loads(run("generate", "summarize", "The weather is", "--max-tokens", "6",
                           "--temperature", "0", "--json").stdout)
    assert whole["model"] == "summarize@1"
    assert streamed.stdout == whole["choices"][0]["text"] + "\n"


def test_chat_answers_one_message_or_a_conversation_from_stdin(run):
    one = run("chat", "summarize", "Hello", "--max-tokens", "4", "--temperature", "0", "--json")
    assert json.loads(one.stdout)["choices"][0]["message"]["role"] == "assistant"
    talk = run("chat", "support", "--max-tokens", "4", "--temperature", "0", input="Hi\nAnd then?\n")
    assert talk.exit_code == 0 and len(talk.stdout.splitlines()) == 2


def test_exit_codes_are_1_for_api_errors_and_2_for_usage(run):
    missing = run("adapters", "show", "no-such-adapter")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: 404") and missing.stdout == ""
    denied = run("feedback", "stats", key="not-a-key")
    assert denied.exit_code == 1 and "error: 401" in denied.stderr
    assert run("adapters", "promote", "summarize", "no-such-alias").exit_code == 2
    assert run("feedback", "post", "x", "--choice", "0").exit_code == 2  # neither candidates nor ids
    assert run("jobs", "submit", "sft", "demo").exit_code == 2
