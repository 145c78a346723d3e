"""Settings: layering (defaults < file < env < flags), sources, validation and error lines."""

from pathlib import Path
from typing import Any, NamedTuple

import pytest
from pydantic import ValidationError

from sidecar.config import (
    ENV_FIELDS,
    ConfigError,
    LoadedConfig,
    RingsideConfig,
    load_config,
    render_with_sources,
)
from tests.paths import ROOT
from tests.pki import make_ca, make_cert

EXAMPLE_CONFIG = ROOT / "config" / "ringside.example.yaml"


def write(tmp_path: Path, text: str, name: str = "ringside.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path: Path | None = None, env: dict[str, str] | None = None, **flags: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env or {}, {f"--{k.replace('_', '-')}": v for k, v in flags.items()})
    message = str(caught.value)
    assert "\n" not in message
    return message


def write_secret(tmp_path: Path, text: str, name: str = "password") -> Path:
    """A password file as `ringside auth` writes it: mode 0600 (anything looser is refused)."""
    path = write(tmp_path, text, name)
    path.chmod(0o600)
    return path


def leaf(loaded: LoadedConfig, field: str) -> Any:
    value: Any = loaded.config
    for part in field.split("."):
        value = getattr(value, part)
    return value


def test_defaults_without_any_file_env_or_flag() -> None:
    loaded = load_config(None, {}, {})
    config = loaded.config
    assert config.cluster == "ringrift"
    assert config.node_id is None
    assert config.etcd.endpoints == ("http://127.0.0.1:2379",)
    assert config.etcd.request_timeout == 1.5
    assert config.lease_ttl == 10
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8776)
    assert config.leader.eligible is False
    assert config.leader.validity_margin == 2.0
    assert config.leader.hook_timeout == 10.0
    assert config.identity.node_id_file == Path("/etc/ringrift/node-id")
    assert config.identity.p2p_defaults_file == Path("/etc/default/ringrift-p2p")
    assert loaded.path is None
    assert set(loaded.sources.values()) == {"default"}
    assert "etcd.endpoints" in loaded.sources
    assert "identity.allow_unknown_node" in loaded.sources


class Layered(NamedTuple):
    """One field set by every layer: the file snippet, the env pair and the flag pair."""

    field: str
    snippet: str
    env: tuple[str, str]
    flag: tuple[str, object]
    expected: tuple[object, object, object]  # from file, env, flag


PRECEDENCE = [
    Layered(
        "cluster",
        "cluster: from-file",
        ("RINGSIDE_CLUSTER", "from-env"),
        ("--cluster", "from-flag"),
        ("from-file", "from-env", "from-flag"),
    ),
    Layered(
        "node_id",
        "node_id: file-node",
        ("RINGSIDE_NODE_ID", "env-node"),
        ("--node-id", "flag-node"),
        ("file-node", "env-node", "flag-node"),
    ),
    Layered(
        "lease_ttl",
        "lease_ttl: 20",
        ("RINGSIDE_LEASE_TTL", "30"),
        ("--lease-ttl", 40),
        (20, 30, 40),
    ),
    Layered(
        "http.listen",
        "http: {listen: '0.0.0.0:1'}",
        ("RINGSIDE_HTTP_LISTEN", "[::1]:2"),
        ("--http-listen", "10.0.0.1:3"),
        ("0.0.0.0:1", "[::1]:2", "10.0.0.1:3"),
    ),
    Layered(
        "leader.eligible",
        "leader: {eligible: true}",
        ("RINGSIDE_LEADER_ELIGIBLE", "no"),
        ("--leader-eligible", True),
        (True, False, True),
    ),
    Layered(
        "etcd.endpoints",
        "etcd: {endpoints: ['http://f:1']}",
        ("RINGSIDE_ETCD_ENDPOINTS", "http://e:2"),
        ("--etcd-endpoints", "http://g:3"),
        (("http://f:1",), ("http://e:2",), ("http://g:3",)),
    ),
    Layered(
        "inventory",
        "inventory: /file/hosts.yaml",
        ("RINGSIDE_INVENTORY", "/env/hosts.yaml"),
        ("--inventory", Path("/flag/hosts.yaml")),
        (Path("/file/hosts.yaml"), Path("/env/hosts.yaml"), Path("/flag/hosts.yaml")),
    ),
]


@pytest.mark.parametrize("case", PRECEDENCE, ids=[case.field for case in PRECEDENCE])
def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path, case: Layered) -> None:
    path = write(tmp_path, case.snippet + "\n")
    env = dict([case.env])
    from_file, from_env, from_flag = case.expected

    assert leaf(load_config(None, {}, {}), case.field) != from_file

    only_file = load_config(path, {}, {})
    assert leaf(only_file, case.field) == from_file
    assert only_file.sources[case.field] == f"file {path}"

    file_and_env = load_config(path, env, {})
    assert leaf(file_and_env, case.field) == from_env
    assert file_and_env.sources[case.field] == f"env {case.env[0]}"

    everything = load_config(path, env, dict([case.flag]))
    assert leaf(everything, case.field) == from_flag
    assert everything.sources[case.field] == f"flag {case.flag[0]}"
    assert everything.offered("file", case.field) is not None
    assert everything.offered("env", case.field) is not None


def test_env_names_are_the_documented_ones() -> None:
    assert set(ENV_FIELDS) == {
        "RINGSIDE_CLUSTER",
        "RINGSIDE_NODE_ID",
        "RINGSIDE_ETCD_ENDPOINTS",
        "RINGSIDE_HTTP_LISTEN",
        "RINGSIDE_LEASE_TTL",
        "RINGSIDE_LEADER_ELIGIBLE",
        "RINGSIDE_ETCD_USERNAME",
        "RINGSIDE_ETCD_PASSWORD_FILE",
        "RINGSIDE_INVENTORY",
        "RINGSIDE_HTTP_TOKEN",
        "RINGSIDE_HTTP_TOKEN_FILE",
        "RINGSIDE_ADVERTISE_ADDRESSES",
        "RINGSIDE_LOCK_FILE",
        "RINGSIDE_ORCHESTRATOR_HEALTH_URL",
        "RINGSIDE_ETCD_CACERT",
        "RINGSIDE_ETCD_CERT",
        "RINGSIDE_ETCD_KEY",
    }


def test_a_misspelt_variable_is_named_with_a_did_you_mean() -> None:
    loaded = load_config(None, {"RINGSIDE_LEASE_TLL": "30", "RINGSIDE_FOO": "1"}, {})
    assert loaded.config.lease_ttl == 10  # not applied
    assert loaded.warnings == (
        "RINGSIDE_FOO is not a ringside setting (ignored)",
        "RINGSIDE_LEASE_TLL is not a ringside setting; did you mean RINGSIDE_LEASE_TTL?",
    )
    hooks = {"RINGSIDE_EVENT": "elected", "RINGSIDE_REASON": "crash", "RINGSIDE_TEST_X": "1"}
    assert load_config(None, hooks, {}).warnings == ()  # a hook running ringside: no noise


def test_a_password_in_the_environment_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"RINGSIDE_ETCD_PASSWORD is not read: .* set \w+_FILE"):
        load_config(None, {"RINGSIDE_ETCD_PASSWORD": "hunter2"}, {})


def test_every_env_variable_sets_its_field(tmp_path: Path) -> None:
    secret = write_secret(tmp_path, "s3cret\n")
    ca = make_ca(tmp_path, "ca")
    client = make_cert(tmp_path, ca, "client", "DNS:ringside")
    env = {
        "RINGSIDE_CLUSTER": "blue",
        "RINGSIDE_NODE_ID": "hetzner-cpu1",
        "RINGSIDE_ETCD_ENDPOINTS": " http://10.0.0.1:2379 , https://100.64.0.21:2379,",
        "RINGSIDE_HTTP_LISTEN": "[::1]:9000",
        "RINGSIDE_LEASE_TTL": "30",
        "RINGSIDE_LEADER_ELIGIBLE": "YES",
        "RINGSIDE_ETCD_USERNAME": "ringside",
        "RINGSIDE_ETCD_PASSWORD_FILE": str(secret),
        "RINGSIDE_INVENTORY": "/etc/ringrift/distributed_hosts.yaml",
        "RINGSIDE_HTTP_TOKEN": "t0ken",
        "RINGSIDE_HTTP_TOKEN_FILE": "/run/ringside/blue.token",
        "RINGSIDE_ADVERTISE_ADDRESSES": "203.0.113.21, 100.64.0.21",
        "RINGSIDE_LOCK_FILE": "/run/ringside/blue.lock",
        "RINGSIDE_ORCHESTRATOR_HEALTH_URL": "http://127.0.0.1:8770/health",
        "RINGSIDE_ETCD_CACERT": str(ca[0]),
        "RINGSIDE_ETCD_CERT": str(client[0]),
        "RINGSIDE_ETCD_KEY": str(client[1]),
    }
    loaded = load_config(None, env, {})
    config = loaded.config
    assert config.cluster == "blue"
    assert config.node_id == "hetzner-cpu1"
    assert config.etcd.endpoints == ("http://10.0.0.1:2379", "https://100.64.0.21:2379")
    assert (config.http.host, config.http.port) == ("::1", 9000)
    assert config.lease_ttl == 30
    assert config.leader.eligible is True
    assert config.etcd.username == "ringside"
    assert config.etcd.password_file == secret
    assert config.etcd.effective_password == "s3cret"
    assert config.inventory == Path("/etc/ringrift/distributed_hosts.yaml")
    assert config.http.token == "t0ken"
    assert config.http.token_file == Path("/run/ringside/blue.token")
    assert config.advertise_addresses == ("203.0.113.21", "100.64.0.21")
    assert config.lock_file == Path("/run/ringside/blue.lock")
    assert config.orchestrator.health_url == "http://127.0.0.1:8770/health"
    assert config.etcd.tls is not None
    assert (config.etcd.tls.ca, config.etcd.tls.cert, config.etcd.tls.key) == (ca[0], *client)
    for name, field in ENV_FIELDS.items():
        assert loaded.sources[field] == f"env {name}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[("true", True), ("TRUE", True), ("1", True), ("Yes", True)],
        *[("false", False), ("False", False), ("0", False), ("no", False)],
    ],
)
def test_leader_eligible_env_words(text: str, expected: bool) -> None:
    config = load_config(None, {"RINGSIDE_LEADER_ELIGIBLE": text}, {}).config
    assert config.leader.eligible is expected


@pytest.mark.parametrize("text", ["maybe", "on", "y", "2"])
def test_leader_eligible_env_rejects_other_words(text: str) -> None:
    message = load_error(env={"RINGSIDE_LEADER_ELIGIBLE": text})
    assert message.startswith("leader.eligible (env RINGSIDE_LEADER_ELIGIBLE)")
    assert repr(text) in message


def test_empty_env_values_count_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "lease_ttl: 20\ncluster: filecluster\n")
    env = {"RINGSIDE_LEASE_TTL": "", "RINGSIDE_CLUSTER": "  ", "RINGSIDE_CONFIG": str(path)}
    loaded = load_config(None, env, {})
    assert loaded.config.lease_ttl == 20
    assert loaded.config.cluster == "filecluster"
    assert loaded.sources["lease_ttl"] == f"file {path}"
    assert load_config(None, {"RINGSIDE_CONFIG": ""}, {}).path is None


def test_config_path_from_env_and_flag_path_wins(tmp_path: Path) -> None:
    from_env = write(tmp_path, "lease_ttl: 20\n", "env.yaml")
    from_flag = write(tmp_path, "lease_ttl: 25\n", "flag.yaml")
    assert load_config(None, {"RINGSIDE_CONFIG": str(from_env)}, {}).config.lease_ttl == 20
    loaded = load_config(from_flag, {"RINGSIDE_CONFIG": str(from_env)}, {})
    assert loaded.config.lease_ttl == 25
    assert loaded.path == from_flag


def test_sources_name_file_for_set_leaves_and_default_for_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd:\n  request_timeout: 3\nlabels: {gpu: h100}\n")
    loaded = load_config(path, {}, {})
    assert loaded.sources["etcd.request_timeout"] == f"file {path}"
    assert loaded.sources["labels"] == f"file {path}"
    assert loaded.sources["etcd.endpoints"] == "default"
    assert loaded.config.labels == {"gpu": "h100"}


def test_same_voter_may_be_listed_by_public_and_tailnet_address() -> None:
    urls = "http://203.0.113.21:2379,http://100.64.0.21:2379"
    config = load_config(None, {"RINGSIDE_ETCD_ENDPOINTS": urls}, {}).config
    assert len(config.etcd.endpoints) == 2


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}, {}).config == RingsideConfig()


def test_settings_are_frozen() -> None:
    config = load_config(None, {}, {}).config
    with pytest.raises(ValidationError):
        config.lease_ttl = 99


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: a\nfoo: 1\n")
    assert load_error(path) == f"unknown key 'foo' in file {path}"


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd:\n  endpoint: http://a:1\n")
    assert load_error(path) == f"unknown key 'etcd.endpoint' in file {path}"


def test_wrong_type_from_env_names_field_and_variable() -> None:
    message = load_error(env={"RINGSIDE_LEASE_TTL": "ten"})
    assert message.startswith("lease_ttl (env RINGSIDE_LEASE_TTL): Input should be a valid integer")
    assert "'ten'" in message


def test_wrong_type_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd: [http://a:1]\n")
    assert load_error(path).startswith(f"etcd (file {path}): Input should be")


def test_yaml_syntax_error_gives_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: a\netcd:\n  endpoints: [http://a:1\nlease_ttl: 3\n")
    message = load_error(path)
    assert message.startswith(f"config file {path} line 4: ")


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    """YAML's last-one-wins would silently undo the first value; name both lines instead."""
    path = write(tmp_path, "cluster: a\nlease_ttl: 5\nlabels:\n  gpu: h100\nlease_ttl: 7\n")
    message = load_error(path)
    assert message == (
        f"config file {path} line 5: duplicate key 'lease_ttl' (first given on line 2)"
    )
    nested = write(tmp_path, "etcd:\n  username: a\n  username: b\n")
    assert "line 3: duplicate key 'username'" in load_error(nested)


def test_missing_config_file() -> None:
    message = load_error(Path("/nonexistent/ringside.yaml"))
    assert (
        message == "cannot read config file /nonexistent/ringside.yaml: No such file or directory"
    )


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path) == f"cannot read config file {tmp_path}: Is a directory"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- cluster\n")
    assert load_error(path) == f"config file {path}: the top level must be a mapping, not a list"


@pytest.mark.parametrize("ttl", ["1", "601", "0"])
def test_lease_ttl_out_of_range(ttl: str) -> None:
    message = load_error(env={"RINGSIDE_LEASE_TTL": ttl})
    assert message.startswith("lease_ttl (env RINGSIDE_LEASE_TTL): Input should be")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://10.0.0.1:2379", "must start with http:// or https://"),
        ("10.0.0.1:2379", "must start with http:// or https://"),
        ("http://10.0.0.1", "needs a host and a port"),
        ("http://:2379", "needs a host and a port"),
        ("http://10.0.0.1:99999", "port outside 1-65535"),
        ("http://10.0.0.1:2379/v3", "must not have a path"),
    ],
)
def test_bad_endpoint_names_its_index(url: str, problem: str) -> None:
    env = {"RINGSIDE_ETCD_ENDPOINTS": f"http://10.0.0.9:2379,{url}"}
    message = load_error(env=env)
    assert message.startswith("etcd.endpoints[1] (env RINGSIDE_ETCD_ENDPOINTS): ")
    assert problem in message


def test_duplicate_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd:\n  endpoints: [http://a:1, http://b:2, http://a:1]\n")
    message = load_error(path)
    assert message == (
        f"etcd.endpoints[2] (file {path}): http://a:1 is already listed as etcd.endpoints[0]"
    )


def test_endpoints_must_not_be_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd: {endpoints: []}\n")
    assert load_error(path).startswith(f"etcd.endpoints (file {path}): needs at least one URL")


def test_margin_must_be_below_lease_ttl(tmp_path: Path) -> None:
    path = write(tmp_path, "leader: {validity_margin: 5}\n")
    message = load_error(path, lease_ttl=5)
    assert message.startswith(f"leader.validity_margin (file {path}): 5.0 s must be less than")
    assert "lease_ttl from flag --lease-ttl" in message


def test_request_timeout_must_be_below_lease_ttl(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd: {request_timeout: 2.5}\nleader: {validity_margin: 0}\n")
    message = load_error(path, env={"RINGSIDE_LEASE_TTL": "2"})
    assert message.startswith(f"etcd.request_timeout (file {path}): 2.5 s must be less than")
    assert "lease_ttl from env RINGSIDE_LEASE_TTL" in message


def test_call_timeout_must_fit_in_a_keepalive_period(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd: {call_timeout: 4}\n")
    message = load_error(path)
    assert message.startswith(f"etcd.call_timeout (file {path}): 4.0 s is longer than a keepalive")
    assert "lease_ttl (default)" in message or "lease_ttl" in message


def test_call_timeout_is_at_least_one_request(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd: {call_timeout: 1, request_timeout: 1.5}\n")
    assert "is shorter than etcd.request_timeout" in load_error(path)


def test_one_call_is_bounded_by_a_keepalive_period_not_by_the_endpoint_count() -> None:
    """Six endpoints at 1.5 s each would be 9 s against a 10 s lease."""
    urls = [f"http://10.0.0.{i}:2379" for i in range(1, 7)]
    config = RingsideConfig.model_validate({"etcd": {"endpoints": urls}})
    assert config.etcd_call_timeout == pytest.approx(10 / 3)
    one = RingsideConfig.model_validate({"etcd": {"endpoints": urls[:1]}})
    assert one.etcd_call_timeout == 1.5


def test_negative_margin(tmp_path: Path) -> None:
    path = write(tmp_path, "leader: {validity_margin: -1}\n")
    assert load_error(path).startswith(f"leader.validity_margin (file {path}): Input should be")


def test_more_errors_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "lease_ttl: x\ncluster: 5\nhttp: {listen: nope}\n")
    assert load_error(path).endswith("(and 2 more)")


def test_missing_password_file() -> None:
    env = {"RINGSIDE_ETCD_USERNAME": "u", "RINGSIDE_ETCD_PASSWORD_FILE": "/nonexistent/pw"}
    message = load_error(env=env)
    assert message == (
        "etcd.password_file (env RINGSIDE_ETCD_PASSWORD_FILE): "
        "cannot read /nonexistent/pw: No such file or directory"
    )


def test_password_file_is_read_and_newline_stripped(tmp_path: Path) -> None:
    secret = write_secret(tmp_path, "pa ss\r\n\n", "pw")
    path = write(tmp_path, f"etcd: {{username: u, password_file: {secret}}}\n")
    etcd = load_config(path, {}, {}).config.etcd
    assert etcd.effective_password == "pa ss"
    assert etcd.password is None


@pytest.mark.parametrize(
    ("mode", "refused"),
    [(0o644, True), (0o640, True), (0o604, True), (0o600, False), (0o400, False)],
)
def test_a_password_file_open_to_group_or_others_is_refused(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    secret = write_secret(tmp_path, "s3cret\n", "pw")
    secret.chmod(mode)
    env = {"RINGSIDE_ETCD_USERNAME": "u", "RINGSIDE_ETCD_PASSWORD_FILE": str(secret)}
    if not refused:
        assert load_config(None, env, {}).config.etcd.effective_password == "s3cret"
        return
    assert load_error(env=env) == (
        f"etcd.password_file (env RINGSIDE_ETCD_PASSWORD_FILE): {secret} has mode {mode:04o}: "
        f"group or others may read or write it; run `chmod 600 {secret}`"
    )


def test_a_password_file_is_judged_by_the_file_a_symlink_points_at(tmp_path: Path) -> None:
    """A symlink's own mode is 0777: what counts is who may read the password itself."""
    secret = write_secret(tmp_path, "s3cret\n", "pw")
    link = tmp_path / "link"
    link.symlink_to(secret)
    env = {"RINGSIDE_ETCD_USERNAME": "u", "RINGSIDE_ETCD_PASSWORD_FILE": str(link)}
    assert load_config(None, env, {}).config.etcd.effective_password == "s3cret"
    secret.chmod(0o644)
    assert f"{link} has mode 0644" in load_error(env=env)


def test_inline_password(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd: {username: u, password: hunter2}\n")
    assert load_config(path, {}, {}).config.etcd.effective_password == "hunter2"


def test_empty_password_file(tmp_path: Path) -> None:
    secret = write_secret(tmp_path, "\n", "pw")
    path = write(tmp_path, f"etcd: {{username: u, password_file: {secret}}}\n")
    assert load_error(path) == f"etcd.password_file (file {path}): {secret} is empty"


def test_password_and_password_file_are_exclusive(tmp_path: Path) -> None:
    secret = write(tmp_path, "x\n", "pw")
    path = write(tmp_path, "etcd: {username: u, password: p}\n")
    message = load_error(path, env={"RINGSIDE_ETCD_PASSWORD_FILE": str(secret)})
    assert message.startswith("etcd.password_file (env RINGSIDE_ETCD_PASSWORD_FILE): ")
    assert "not both" in message


def test_username_needs_password() -> None:
    message = load_error(env={"RINGSIDE_ETCD_USERNAME": "u"})
    assert message.startswith("etcd.password (default): is required when username is set")


def test_tls_files_must_exist_and_pair(tmp_path: Path) -> None:
    ca, _ = make_ca(tmp_path, "ca")
    cert, key = make_cert(tmp_path, (ca, tmp_path / "ca.key"), "client", "DNS:client")
    ok = write(tmp_path, f"etcd:\n  tls: {{ca: {ca}, cert: {cert}, key: {key}}}\n", "ok.yaml")
    tls = load_config(ok, {}, {}).config.etcd.tls
    assert tls is not None
    assert (tls.ca, tls.cert, tls.key) == (ca, cert, key)

    unpaired = write(tmp_path, f"etcd:\n  tls: {{cert: {cert}}}\n", "unpaired.yaml")
    assert load_error(unpaired) == "etcd.tls.key (default): is required when cert is set"

    missing = write(tmp_path, "etcd:\n  tls: {ca: /nonexistent/ca.pem}\n", "missing.yaml")
    assert load_error(missing) == (
        f"etcd.tls.ca (file {missing}): cannot read /nonexistent/ca.pem: No such file or directory"
    )


def test_empty_tls_section_enables_tls_without_files(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd:\n  tls: {}\n")
    assert load_config(path, {}, {}).config.etcd.tls is not None


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:8776", "127.0.0.1", 8776),
        ("[::1]:8776", "::1", 8776),
        ("localhost:1", "localhost", 1),
    ],
)
def test_http_listen_parses(listen: str, host: str, port: int) -> None:
    http = load_config(None, {"RINGSIDE_HTTP_LISTEN": listen}, {}).config.http
    assert (http.host, http.port) == (host, port)


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("8776", "is not host:port"),
        (":8776", "is not host:port"),
        ("::1:8776", "write an IPv6 address in brackets"),
        ("[nope]:8776", "is not an IPv6 address"),
        ("127.0.0.1:0", "port must be a number from 1 to 65535"),
        ("127.0.0.1:65536", "port must be a number from 1 to 65535"),
        ("127.0.0.1:http", "port must be a number from 1 to 65535"),
    ],
)
def test_http_listen_rejects(listen: str, problem: str) -> None:
    message = load_error(http_listen=listen)
    assert message.startswith("http.listen (flag --http-listen): ")
    assert problem in message


@pytest.mark.parametrize("cluster", ["Ringrift", "-a", "a-", "a_b", "x" * 64])
def test_cluster_must_be_a_dns_label(cluster: str) -> None:
    assert load_error(cluster=cluster).startswith("cluster (flag --cluster): ")


def test_not_leader_eligible_flag_is_labelled(tmp_path: Path) -> None:
    path = write(tmp_path, "leader: {eligible: true}\n")
    loaded = load_config(path, {}, {"--not-leader-eligible": False})
    assert loaded.config.leader.eligible is False
    assert loaded.sources["leader.eligible"] == "flag --not-leader-eligible"


def test_render_with_sources_masks_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd: {username: u, password: hunter2}\n")
    env = {"RINGSIDE_HTTP_TOKEN": "t0ken", "RINGSIDE_LEASE_TTL": "30"}
    text = render_with_sources(load_config(path, env, {"--cluster": "blue"}))
    assert "hunter2" not in text
    assert "t0ken" not in text
    assert f'  password: "***"  # file {path}' in text
    assert '  token: "***"  # env RINGSIDE_HTTP_TOKEN' in text
    assert "lease_ttl: 30  # env RINGSIDE_LEASE_TTL" in text
    assert 'cluster: "blue"  # flag --cluster' in text
    assert '  endpoints: ["http://127.0.0.1:2379"]  # default' in text


def test_rendered_config_reads_back(tmp_path: Path) -> None:
    original = load_config(None, {"RINGSIDE_LEASE_TTL": "30"}, {"--cluster": "blue"})
    path = write(tmp_path, render_with_sources(original))
    assert load_config(path, {}, {}).config == original.config


def test_example_config_loads_and_documents_every_field() -> None:
    loaded = load_config(EXAMPLE_CONFIG, {}, {})
    assert loaded.config == RingsideConfig()
    text = EXAMPLE_CONFIG.read_text()
    for field in loaded.sources:
        name = field.rsplit(".", 1)[-1]
        assert f"{name}:" in text, f"{field} is not documented in the example"
    for name, field in ENV_FIELDS.items():
        assert name in text, f"{name} ({field}) is not mentioned in the example"
    for field, source in loaded.sources.items():
        assert source == f"file {EXAMPLE_CONFIG}", f"{field} is not set in the example"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("ftp://127.0.0.1/health", "must be an http:// or https:// URL with a host"),
        ("http:///health", "must be an http:// or https:// URL with a host"),
        ("http://127.0.0.1:99999/health", "has a port outside 1-65535"),
    ],
)
def test_a_bad_orchestrator_health_url_names_the_variable(url: str, complaint: str) -> None:
    message = load_error(env={"RINGSIDE_ORCHESTRATOR_HEALTH_URL": url})
    assert message.startswith("orchestrator.health_url (env RINGSIDE_ORCHESTRATOR_HEALTH_URL): ")
    assert complaint in message
