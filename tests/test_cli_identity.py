"""The `ringside identity` and `ringside config` commands, through click and as a real process."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import click
import pytest
from click.testing import CliRunner, Result

from sidecar import __version__
from sidecar.cli import config_options, ringside
from sidecar.cli.base import EVERY_SETTING
from sidecar.config import FLAG_FIELDS
from sidecar.identity import HostFacts
from tests.cli_support import clean_env
from tests.paths import EXAMPLE_INVENTORY

RINGSIDE_SCRIPT = Path(sys.executable).parent / "ringside"
OUTCOME = re.compile(r"  (chosen|not set|skipped: .*|rejected: .*|not in inventory)$")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the developer's RINGSIDE_*/RINGRIFT_* variables nor the hostname leak in."""
    for name in list(os.environ):
        if name.startswith(("RINGSIDE_", "RINGRIFT_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(HostFacts, "gather", classmethod(lambda cls: HostFacts("worker-7", ())))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config that keeps identity files inside tmp_path, away from the real /etc."""
    path = tmp_path / "ringside.yaml"
    path.write_text(
        "identity:\n"
        f"  node_id_file: {tmp_path / 'node-id'}\n"
        f"  p2p_defaults_file: {tmp_path / 'ringrift-p2p'}\n"
    )
    return path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(ringside, list(args), env=env)


def assert_one_error_line(result: Result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ringside: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ringside, version {__version__}"


def test_identity_prints_winner_and_every_source(config_file: Path) -> None:
    result = run("identity", "--config", str(config_file), env={"RINGRIFT_NODE_ID": "gpu-3"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "node id: gpu-3 (from env RINGRIFT_NODE_ID)"
    assert len(lines) == 9
    assert lines[1].split() == ["flag", "--node-id", "-", "not", "set"]
    assert lines[3].split()[:4] == ["env", "RINGRIFT_NODE_ID", "gpu-3", "chosen"]
    assert lines[-1].split()[:2] == ["hostname", "worker-7"]
    assert lines[-1].endswith("skipped: an earlier source won")
    outcome_columns = set()
    for line in lines[1:]:
        match = OUTCOME.search(line)
        assert match is not None, line
        outcome_columns.add(match.start())
    assert len(outcome_columns) == 1, "outcomes are not aligned"


def test_identity_json(config_file: Path) -> None:
    result = run("identity", "--config", str(config_file), "--json", "--node-id", "gpu-4")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["node_id"] == "gpu-4"
    assert document["source"] == "flag --node-id"
    assert document["error"] is None
    assert len(document["sources"]) == 8
    assert document["sources"][0] == {
        "source": "flag --node-id",
        "value": "gpu-4",
        "outcome": "chosen",
    }


def test_identity_rejected_explicit_id_exits_2_with_report(config_file: Path) -> None:
    env = {"RINGSIDE_NODE_ID": "2d9de0d97a72"}
    result = run("identity", "--config", str(config_file), env=env)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("ringside: error: ")]
    assert errors == [lines[-1]]
    assert "node id '2d9de0d97a72' from env RINGSIDE_NODE_ID is not usable" in lines[-1]
    assert any("rejected: looks like a Docker container id" in line for line in lines[:-1])
    assert len(lines) == 9
    assert "Traceback" not in result.stderr


def test_identity_json_failure_is_still_json(config_file: Path) -> None:
    result = run("identity", "--config", str(config_file), "--json", "--node-id", "localhost")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["node_id"] is None
    assert "'localhost' names every machine" in document["error"]
    assert_one_error_line(result, "'localhost' names every machine")


def test_identity_inventory_flag_and_allow_unknown_node(config_file: Path) -> None:
    base = ["identity", "--config", str(config_file), "--inventory", str(EXAMPLE_INVENTORY)]
    refused = run(*base, "--node-id", "gpu-new")
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[-1] == (
        f"ringside: error: node id 'gpu-new' from flag --node-id is not a host in inventory "
        f"{EXAMPLE_INVENTORY}; fix it or pass --allow-unknown-node"
    )
    allowed = run(*base, "--node-id", "gpu-new", "--allow-unknown-node")
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout.splitlines()[0] == "node id: gpu-new (from flag --node-id)"
    listed = run(*base, "--node-id", "hetzner-cpu2")
    assert listed.exit_code == 0, listed.output


def test_config_shows_values_with_sources(tmp_path: Path, config_file: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)  # a password file open to others is refused
    with config_file.open("a") as f:
        f.write(f"lease_ttl: 20\netcd:\n  username: u\n  password_file: {secret}\n")
    env = {"RINGSIDE_LEASE_TTL": "25", "RINGSIDE_LEADER_ELIGIBLE": "true"}
    result = run("config", "--config", str(config_file), "--lease-ttl", "30", env=env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "lease_ttl: 30  # flag --lease-ttl" in out
    assert "  eligible: true  # env RINGSIDE_LEADER_ELIGIBLE" in out
    assert f'  username: "u"  # file {config_file}' in out
    assert '  listen: "127.0.0.1:8776"  # default' in out
    assert "hunter2" not in out


def test_config_with_inline_password_masks_it(config_file: Path) -> None:
    with config_file.open("a") as f:
        f.write("etcd: {username: u, password: hunter2}\n")
    result = run("config", "--config", str(config_file))
    assert result.exit_code == 0, result.output
    assert f'  password: "***"  # file {config_file}' in result.stdout
    assert "hunter2" not in result.stdout


def test_only_passed_flags_override(config_file: Path) -> None:
    env = {"RINGSIDE_LEADER_ELIGIBLE": "yes", "RINGSIDE_CLUSTER": "blue"}
    result = run("config", "--config", str(config_file), env=env)
    assert "  eligible: true  # env RINGSIDE_LEADER_ELIGIBLE" in result.stdout
    assert "allow_unknown_node: false  # default" in result.stdout
    negated = run("config", "--config", str(config_file), "--not-leader-eligible", env=env)
    assert "  eligible: false  # flag --not-leader-eligible" in negated.stdout
    assert 'cluster: "blue"  # env RINGSIDE_CLUSTER' in negated.stdout


def test_config_check(config_file: Path) -> None:
    result = run("config", "--check", "--config", str(config_file))
    assert (result.exit_code, result.stdout) == (0, "config ok\n")


def test_config_check_reads_the_inventory(config_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "hosts.yaml"
    result = run("config", "--check", "--config", str(config_file), "--inventory", str(missing))
    assert_one_error_line(result, f"cannot read inventory {missing}: No such file or directory")
    assert result.stdout == ""


class BadInput(NamedTuple):
    """A config file text (None: no file), env, extra args, and the expected error fragment."""

    config_text: str | None
    env: dict[str, str]
    args: list[str]
    expected: str


BAD_INPUTS = {
    "unknown key": BadInput("foo: 1\n", {}, [], "unknown key 'foo' in file {config}"),
    "wrong type": BadInput(
        "", {"RINGSIDE_LEASE_TTL": "ten"}, [], "lease_ttl (env RINGSIDE_LEASE_TTL): Input should"
    ),
    "yaml syntax": BadInput(
        "etcd:\n  endpoints: [a\nx: 1\n", {}, [], "config file {config} line 3: "
    ),
    "unreadable file": BadInput(
        None, {}, [], "cannot read config file {config}: No such file or directory"
    ),
    "missing password file": BadInput(
        "etcd: {username: u}\n",
        {"RINGSIDE_ETCD_PASSWORD_FILE": "/nonexistent/pw"},
        [],
        "etcd.password_file (env RINGSIDE_ETCD_PASSWORD_FILE): cannot read /nonexistent/pw",
    ),
    "lease_ttl range": BadInput(
        "", {}, ["--lease-ttl", "601"], "lease_ttl (flag --lease-ttl): Input should be less"
    ),
    "bad endpoint": BadInput(
        "", {}, ["--etcd-endpoints", "http://a:1,b:2"], "etcd.endpoints[1] (flag --etcd-endp"
    ),
    "duplicate endpoint": BadInput(
        "etcd: {endpoints: [http://a:1, http://a:1]}\n",
        {},
        [],
        "etcd.endpoints[1] (file {config}): http://a:1 is already listed",
    ),
    "margin >= ttl": BadInput(
        "leader: {validity_margin: 3}\n",
        {"RINGSIDE_LEASE_TTL": "3"},
        [],
        "leader.validity_margin (file {config}): 3.0 s must be less than lease_ttl",
    ),
    "bad boolean": BadInput(
        "", {"RINGSIDE_LEADER_ELIGIBLE": "maybe"}, [], "leader.eligible (env RINGSIDE_LEADER_"
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
@pytest.mark.parametrize("command", ["config", "run"])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, command: str, case: BadInput) -> None:
    config = tmp_path / "ringside.yaml"
    if case.config_text is not None:
        config.write_text(case.config_text)
    result = run(command, "--config", str(config), *case.args, env=case.env)
    assert_one_error_line(result, case.expected.format(config=config))


def test_click_usage_errors_exit_2() -> None:
    result = run("config", "--lease-ttl", "ten")
    assert result.exit_code == 2
    assert "Invalid value for '--lease-ttl'" in result.stderr


def test_every_config_option_maps_to_a_setting() -> None:
    @click.command()
    @config_options(*EVERY_SETTING)
    def probe(config_request: object) -> None:
        """Probe command."""

    options = {opt for param in probe.params for opt in (*param.opts, *param.secondary_opts)}
    options.discard("--config")
    assert options == set(FLAG_FIELDS) - {"--etcd"}  # `--etcd` is its own option (status)


def _options(*command: str) -> set[str]:
    """The long options `ringside COMMAND --help` lists."""
    result = run(*command, "--help")
    assert result.exit_code == 0, result.stderr
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z-]+)", result.stdout, re.M))


DAEMON_FLAGS = {"--lease-ttl", "--http-listen", "--leader-eligible", "--lock-file"}


@pytest.mark.parametrize(
    "command",
    [("status",), ("members",), ("leader",), ("resign",), ("switchover",), ("version",),
     ("events",), ("flaps",), ("compare",), ("identity",), ("etcd",), ("auth", "show")],
)  # fmt: skip
def test_a_command_lists_only_the_options_it_uses(command: tuple[str, ...]) -> None:
    """Issue 14: every command listed all the daemon's flags. Only `run`, `config` and
    `doctor` (which check the daemon's settings) take them now."""
    listed = _options(*command)
    assert not listed & DAEMON_FLAGS, f"{command} lists {sorted(listed & DAEMON_FLAGS)}"
    assert "--config" in listed


@pytest.mark.parametrize(
    ("command", "own"),
    [("members", {"--output"}), ("leader", {"--output"}), ("version", {"--output"}),
     ("resign", {"--output"}), ("switchover", {"--to", "--timeout"})],
)  # fmt: skip
def test_the_sidecar_commands_take_no_setting_flags(command: str, own: set[str]) -> None:
    assert _options(command) == {"--sidecar", "--config", "--help"} | own


def test_status_reads_etcd_with_one_option() -> None:
    """`status` had both `--etcd URL` and `--etcd-endpoints URL` with different meanings."""
    listed = _options("status")
    assert "--etcd" in listed
    assert "--etcd-endpoints" not in listed
    assert not listed & (DAEMON_FLAGS | {"--node-id", "--allow-unknown-node"})


@pytest.mark.parametrize("command", [("run",), ("config",), ("doctor",)])
def test_the_daemon_commands_take_every_setting(command: tuple[str, ...]) -> None:
    assert _options(*command) >= set(FLAG_FIELDS) - {"--etcd", "--not-leader-eligible"}


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `ringside` script, as an operator runs it (RINGRIFT_* are already gone:
    the autouse fixture removed them)."""
    return subprocess.run(
        [str(RINGSIDE_SCRIPT), *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_real_process_config_error_is_one_line() -> None:
    completed = run_script("config", "--check", RINGSIDE_LEASE_TTL="abc")
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    assert completed.stderr.splitlines() == [
        "ringside: error: lease_ttl (env RINGSIDE_LEASE_TTL): Input should be a valid integer, "
        "unable to parse string as an integer, got 'abc'"
    ]


def test_real_process_rejected_identity(config_file: Path) -> None:
    completed = run_script(
        "identity", "--config", str(config_file), RINGRIFT_NODE_ID="192-222-51-29"
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    last = completed.stderr.splitlines()[-1]
    assert last.startswith("ringside: error: node id '192-222-51-29' from env RINGRIFT_NODE_ID")
    assert completed.stderr.count("ringside: error:") == 1


@pytest.mark.parametrize("spelling", [("-o", "json"), ("--json",), ("-o", "yaml")])
def test_identity_speaks_the_common_output_grammar(spelling: tuple[str, ...]) -> None:
    """`-o json|yaml` as on every command that prints a document; `--json` still works."""
    import yaml  # noqa: PLC0415

    result = run("identity", "--node-id", "hetzner-cpu1", *spelling)
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)  # JSON is YAML too
    assert (document["node_id"], document["source"]) == ("hetzner-cpu1", "flag --node-id")


def test_a_misspelt_variable_is_one_warning_line_and_changes_nothing() -> None:
    result = run("identity", "--node-id", "hetzner-cpu1", env={"RINGSIDE_LEASE_TLL": "30"})
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "ringside: warning: RINGSIDE_LEASE_TLL is not a ringside setting; "
        "did you mean RINGSIDE_LEASE_TTL?\n"
    )


def test_etcdctls_tls_flags_set_the_tls_files(tmp_path: Path) -> None:
    from tests.pki import make_ca, make_cert  # noqa: PLC0415

    ca = make_ca(tmp_path, "ca")
    cert, key = make_cert(tmp_path, ca, "client", "DNS:ringside")
    flags = ("--cacert", str(ca[0]), "--cert", str(cert), "--key", str(key))
    result = run("config", *flags)
    assert result.exit_code == 0, result.output
    assert f'ca: "{ca[0]}"  # flag --cacert' in result.stdout, result.stdout
    assert f'key: "{key}"  # flag --key' in result.stdout


def test_config_shows_where_the_lock_and_token_go_when_left_unset() -> None:
    result = run("config", "--cluster", "blue", "--lock-file", "/tmp/ringside-blue.lock")
    assert result.exit_code == 0, result.output
    assert 'lock_file: "/tmp/ringside-blue.lock"  # flag --lock-file' in result.stdout
    assert "token_file: null  # default: /tmp/ringside-blue.token" in result.stdout
    unset = run("config", "--cluster", "blue")
    assert re.search(r"^lock_file: null  # default: /\S+/blue\.lock$", unset.stdout, re.M)


def test_shell_completion_works_as_the_readme_says() -> None:
    """`eval "$(_RINGSIDE_COMPLETE=bash_source ringside)"`: the script, then its answers."""
    script = run_script(_RINGSIDE_COMPLETE="bash_source")
    assert "_ringside_completion()" in script.stdout, script.stderr
    words = run_script(_RINGSIDE_COMPLETE="bash_complete", COMP_WORDS="ringside sw", COMP_CWORD="1")
    assert words.stdout.strip() == "plain,switchover", words


def test_members_help_shows_the_node_id_as_optional() -> None:
    result = run("members", "--help")
    assert result.stdout.splitlines()[0] == "Usage: ringside members [OPTIONS] [NODE_ID]"


def test_config_prints_json_too_with_secrets_hidden(tmp_path: Path) -> None:
    """`config` printed YAML only (issue 14): `-o json` has the settings and their sources."""
    config = tmp_path / "ringside.yaml"
    config.write_text("http: {token: s3cret}\nlease_ttl: 12\n")
    result = run("config", "--config", str(config), "-o", "json", env={"RINGSIDE_CLUSTER": "blue"})
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["config"]["http"]["token"] == "***"
    assert "s3cret" not in result.stdout
    assert document["config"]["lease_ttl"] == 12
    assert document["config"]["cluster"] == "blue"
    assert document["sources"]["cluster"] == "env RINGSIDE_CLUSTER"
    assert document["sources"]["lease_ttl"] == f"file {config}"
