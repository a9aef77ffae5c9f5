"""``jupyter compute`` as users run it, with no terminal: in this process for what it prints, and as
real processes for exit codes, the console scripts and hand-offs that outlive the call."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import cli, cli_subprocess, wait_for


def test_help_documents_every_option():
    r = cli("create", "--help")
    assert r.returncode == 0
    for opt in ("--kind", "--size", "--min-nodes", "--max-nodes", "--idle-seconds-before-scaledown",
                "--idle-shutdown-minutes", "--priority", "--resource-id", "--python", "--env", "--cwd",
                "--memory-limit-mb", "--description", "--tag", "--workspace", "--output", "--no-wait", "-f"):
        assert opt in r.stdout, opt
    for verb in ("delete", "detach", "stop"):
        assert "--yes" in cli(verb, "--help").stdout
    r = subprocess.run(["jupyter", "compute", "--help"], capture_output=True, text=True,
                       env={"PATH": f"{sys.prefix}/bin"})
    assert r.returncode == 0 and "kinds" in r.stdout


def test_list_and_kinds_json():
    r = cli("list", "--output", "json")
    assert r.returncode == 0, r.stderr
    names = [t["name"] for t in json.loads(r.stdout)]
    assert names == ["this-machine"]
    r = cli("kinds", "-o", "json")
    assert {"local", "local-kernel"} <= {k["name"] for k in json.loads(r.stdout)}
    r = cli("list")
    assert "this-machine" in r.stdout and "STATE" in r.stdout


def test_exit_codes():
    # The exit status a shell sees is the process's own: a usage error, an unknown target and a
    # refused request through the real entry points (python -m and the installed console script).
    assert cli_subprocess("frobnicate").returncode == 2                          # bad usage
    assert cli_subprocess("show", "ghost").returncode == 2                        # unknown target
    r = subprocess.run([f"{sys.prefix}/bin/jupyter-compute", "stop", "this-machine", "--yes"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 2 and "always running" in r.stderr
    # The same mapping, for the rest, in this process.
    assert cli("create", "x", "--kind", "local-kernel", "--memory-limit-mb", "many").returncode == 2
    r = cli("create", "x", "--kind", "local-kernel", "--memory-limit-mb", "1")
    assert r.returncode == 2 and "memory_limit_mb" in r.stderr
    r = cli("create", "x", "--kind", "local-kernel", "--env", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
    r = cli("show", "ghost", "-w", "nowhere")
    assert r.returncode == 2 and "no workspace" in r.stderr
    r = cli("stop", "this-machine", "--yes")
    assert r.returncode == 2 and "always running" in r.stderr
    # an invalid request changed nothing
    assert [t["name"] for t in json.loads(cli("list", "-o", "json").stdout)] == ["this-machine"]


def test_spec_file_progress_and_conflict(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("env:\n  GREETING: hello\nmemory_limit_mb: 2048\ndescription: from a file\n")
    r = cli("create", "k1", "--kind", "local-kernel", "-f", str(spec), "--env", "EXTRA=1")
    assert r.returncode == 0, r.stderr
    assert "waiting for the kernel to answer" in r.stderr          # live progress
    assert "state: running" in r.stdout                             # ends with the final state
    t = json.loads(cli("show", "k1", "-o", "json").stdout)
    assert t["properties"]["env"] == {"GREETING": "hello", "EXTRA": "1"}
    assert t["properties"]["memory_limit_mb"] == 2048 and t["properties"]["description"] == "from a file"
    r = cli("create", "k1", "--kind", "local-kernel")
    assert r.returncode == 1 and "already exists" in r.stderr          # a conflict is a failure, exit 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    assert cli("create", "k2", "--kind", "local-kernel", "-f", str(bad)).returncode == 2


def test_no_prompt_without_a_terminal():
    assert cli("create", "k1", "--kind", "local-kernel").returncode == 0
    r = cli("delete", "k1")
    assert r.returncode == 2 and "--yes" in r.stderr
    # A stop or restart that loses a kernel's variables is asked first, as a delete is.
    for verb in ("stop", "restart"):
        r = cli(verb, "k1")
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().endswith(f"{verb.capitalize()} 'k1' (local-kernel)? The variables in its kernel are "
                                         "lost. Refusing without a terminal to ask on: add --yes."), r.stderr
    assert json.loads(cli("show", "k1", "-o", "json").stdout)["state"] == "running"  # nothing changed
    assert cli("stop", "k1", "--yes").returncode == 0
    assert cli("stop", "k1").returncode == 0  # a stopped kernel holds nothing: nothing to ask
    assert cli("show", "k1").returncode == 0
    r = cli("delete", "k1", "--yes", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "succeeded"
    assert cli("show", "k1").returncode == 2


def test_no_wait_returns_the_operation():
    r = cli_subprocess("create", "k1", "--kind", "local-kernel", "--no-wait", "-o", "json")
    assert r.returncode == 0, r.stderr
    op = json.loads(r.stdout)
    assert op["action"] == "create" and op["status"] in ("running", "succeeded")
    # The CLI process has exited; what it handed off finishes without it.
    def settled():
        t = json.loads(cli("show", "k1", "-o", "json").stdout)
        return t if t["state"] not in ("creating", "starting") else None
    t = wait_for(settled, timeout=60, message="k1's create to end after the CLI exited")
    assert t["state"] == "running", t


@pytest.mark.parametrize("argv, usage", [
    (("create", "x"), "usage: jupyter compute create NAME --kind KIND [options]"),
    (("create", "x", "--kind", "local-kernel", "--bogus"), "usage: jupyter compute create NAME --kind KIND [options]"),
    (("stop",), "usage: jupyter compute stop NAME [options]"),
    (("rename", "a"), "usage: jupyter compute rename NAME NEW_NAME [options]"),
])
def test_a_usage_error_is_the_commands_usage_the_error_and_where_help_is(argv, usage):
    r = cli(*argv)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and r.stdout == ""
    assert len(lines) <= 4, lines
    assert lines[0] == usage
    assert lines[1].startswith(f"jupyter compute {argv[0]}: error: ")
    assert lines[-1] == f"see 'jupyter compute {argv[0]} --help'"


@pytest.mark.parametrize("option, value, message", [
    ("--memory-limit-mb", "1", "memory_limit_mb: must be at least 64"),
    ("--idle-shutdown-minutes", "100000", "idle_shutdown_minutes: must be at most 43,200"),
])
def test_validation_messages_read_like_the_sidebars(option, value, message):
    r = cli("create", "x", "--kind", "local-kernel", option, value)
    assert r.returncode == 2 and r.stderr.strip() == f"jupyter compute: error: {message}", r.stderr
    assert "Input should" not in r.stderr


def test_a_bad_number_and_a_long_bad_value_are_refused_in_plain_words():
    r = cli("create", "x", "--kind", "local-kernel", "--memory-limit-mb", "many")
    assert r.returncode == 2
    assert "argument --memory-limit-mb: must be a whole number, not 'many'" in r.stderr
    r = cli("create", "x", "--kind", "local-kernel", "--memory-limit-mb", "9" * 20 + "x" * 5000)
    assert r.returncode == 2 and len(r.stderr) < 400, r.stderr  # the value is shortened when echoed


def test_show_prints_key_value_lines_with_nested_values_beneath(compute_db):
    assert cli("create", "k1", "--kind", "local-kernel", "--env", "A=1", "--env", "B=two", "--no-wait").returncode == 0
    r = cli("show", "k1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "name: k1" in lines and "kind: local-kernel" in lines and "properties:" in lines
    at = lines.index("  env:")
    assert lines[at + 1:at + 3] == ["    A: 1", "    B: two"]
    assert "{" not in r.stdout and "'" not in r.stdout  # no Python reprs


def test_create_help_for_one_kind_shows_only_that_kinds_fields_required_first():
    r = cli("create", "--kind", "ssh", "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("usage: jupyter compute create NAME --kind ssh [options]")
    assert out.index("required fields of ssh:") < out.index("--host") < out.index("other fields of ssh:")
    assert "--password-stdin" in out and "--ssh-private-key" in out
    assert "--scheduler-address" not in out and "--memory-limit-mb" not in out and "--url" not in out
    r = cli("create", "k", "-k", "local-kernel", "-h")
    assert r.returncode == 0 and "--memory-limit-mb" in r.stdout and "--host" not in r.stdout
    assert len(r.stdout.splitlines()) < len(cli("create", "--help").stdout.splitlines()) / 2
    r = cli("create", "--kind", "nope", "--help")
    assert r.returncode == 2 and "unknown kind 'nope'" in r.stderr
