"""The host a run goes to, through the real server: picked from a group, recorded on the run,
shown by the API, the pages and the CLI, and found with the filter term host:NAME.

Every host here is configured to an address where nothing listens, so each
run ends in error quickly, with ssh's message, once its host is recorded:
these tests are about the choice and the record (tests/hosts/test_remote_runs.py
runs programs on a real sshd).
"""

import html
import re
import socket

from conftest import write_job

GROUPS = {"web": {"hosts": ["web1", "web2"], "select": "round-robin"},
          "batch": {"hosts": ["b1", "b2", "b3"], "select": "least-busy"}}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nowhere(*names):
    """The hosts: setting for ``names``, each at a local port where nothing listens."""
    port = _closed_port()
    return {name: {"hostname": "127.0.0.1", "port": port} for name in names}


HOSTS = nowhere("web1", "web2", "b1", "b2", "b3", "db1.example.com", "d1", "d2", "g1")


def _jobs(jobs_dir):
    write_job(jobs_dir, "spread", "program: {type: program, argv: ['true'], host: web}\n")
    write_job(jobs_dir, "direct", "program: {type: shell, command: 'true', host: db1.example.com}\n")
    write_job(jobs_dir, "chosen", """\
        params: [h]
        program: {type: shell, command: 'true', host: "{{ h }}"}
        """)
    write_job(jobs_dir, "local", "program: {type: program, argv: ['true']}\n")


def _submit(server, job_id, **args):
    run_id = server.post("/api/v1/runs", {"job_id": job_id, "args": args})["run_id"]
    return server.wait_run(run_id)


def _page(server, path):
    status, body, _ = server.request("GET", path)
    assert status == 200, (status, body[:300])
    return body.decode()


def test_a_group_spreads_runs_and_each_run_records_its_host(running, jobs_dir):
    _jobs(jobs_dir)
    server = running(host_groups=GROUPS, hosts=HOSTS)
    runs = [_submit(server, "spread") for _ in range(4)]
    assert [r["host"] for r in runs] == ["web1", "web2", "web1", "web2"]
    assert {r["state"] for r in runs} == {"error"}
    port = HOSTS["web1"]["port"]
    assert runs[0]["message"] == f"could not start: host web1 (127.0.0.1:{port}) is unreachable: connection refused"
    log = [e["message"] for e in server.get(f"/api/v1/runs/{runs[1]['run_id']}/log")["items"]]
    assert "sent to host web2 (group web, round-robin)" in log
    # explain says which host, and why the run could not start there.
    why = server.get(f"/api/v1/runs/{runs[0]['run_id']}/explain")
    assert why["summary"].endswith(f": could not start: host web1 (127.0.0.1:{port}) is unreachable: "
                                   "connection refused")
    assert "sent to remote host web1" in why["lines"]

    direct = _submit(server, "direct")
    assert direct["host"] == "db1.example.com"
    assert "sent to host db1.example.com" in [
        e["message"] for e in server.get(f"/api/v1/runs/{direct['run_id']}/log")["items"]]
    assert _submit(server, "chosen", h="batch")["host"] == "b1"
    assert _submit(server, "chosen", h="b3")["host"] == "b3"
    local = _submit(server, "local")
    assert local["state"] == "success" and local["host"] is None

    # The filter term, through the API.
    web1 = [r["run_id"] for r in runs[0::2]]
    assert sorted(r["run_id"] for r in server.runs("host:web1")) == sorted(web1)
    assert [r["run_id"] for r in server.runs("host:db1.example.com")] == [direct["run_id"]]
    assert local["run_id"] in [r["run_id"] for r in server.runs("!host:web1")]
    assert server.runs("host:web") == []  # a group is not a host: runs record the host picked
    status, body, _ = server.request("GET", "/api/v1/runs?q=host:")
    assert status == 400 and b"empty host name" in body


def test_host_shown_on_the_pages_and_by_the_cli(running, jobs_dir):
    _jobs(jobs_dir)
    server = running(host_groups=GROUPS, hosts=HOSTS)
    first, second = _submit(server, "spread"), _submit(server, "spread")
    local = _submit(server, "local")

    run_page = html.unescape(_page(server, f"/runs/{first['run_id']}"))
    assert re.search(r"<dt>Host</dt><dd><a href=\"/runs\?q=host(?:%3A|:)web1\"[^>]*>web1</a></dd>", run_page), run_page
    assert "<dt>Host</dt>" not in _page(server, f"/runs/{local['run_id']}")

    listed = _page(server, "/?q=host:web2")
    assert f">{second['run_id']}</a>" in listed and f">{first['run_id']}</a>" not in listed
    assert re.search(r'class="run-host">on <a href="/runs\?q=host(?:%3A|:)web2"[^>]*>web2</a>', listed)

    out = server.cli("runs", "host:web1")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["RUN", "JOB", "ARGS", "STATE", "SCHEDULED", "ELAPSED", "HOST"]
    assert len(rows) == 1 and rows[0].split()[0] == first["run_id"] and rows[0].split()[-1] == "web1"
    # A list with no remote run keeps its columns.
    assert "HOST" not in server.cli("runs", "job:local").stdout.splitlines()[0]

    shown = server.cli("show", second["run_id"]).stdout
    assert re.search(r"^host\s+web2$", shown, re.M), shown
    assert "sent to host web2 (group web, round-robin)" in shown
    assert not re.search(r"^host\s", server.cli("show", local["run_id"]).stdout, re.M)


def test_a_host_that_cannot_be_one_sends_the_run_to_error_saying_why(running, jobs_dir):
    _jobs(jobs_dir)
    server = running(host_groups=GROUPS, hosts=HOSTS)
    run = _submit(server, "chosen", h="-oProxyCommand=touch /tmp/x")
    assert run["state"] == "error" and run["host"] is None
    assert run["message"] == ("host: '-oProxyCommand=touch /tmp/x' is not a host or group name "
                              "(it may not start with '-' or contain spaces or control characters)")


def test_procstar_runs_go_to_a_host_of_their_group(running, jobs_dir):
    write_job(jobs_dir, "ps/argv", "program: {type: procstar, argv: [/usr/bin/env]}\n")
    write_job(jobs_dir, "ps/shell", """\
        params: {group_id, who}
        program:
          type: procstar-shell
          group_id: "{{ group_id }}"
          sudo_user: "{{ who }}"
          command: whoami
        """)
    server = running(host_groups={"default": {"hosts": ["d1", "d2"]}, "gpu": {"hosts": ["g1"]}}, hosts=HOSTS)
    page = html.unescape(_page(server, "/jobs/ps/shell"))
    assert "type: procstar-shell" in page and 'group_id: "{{ group_id }}"' in page.replace("'", '"')
    assert [_submit(server, "ps/argv")["host"] for _ in range(3)] == ["d1", "d2", "d1"]
    run = _submit(server, "ps/shell", group_id="gpu", who="nobody")
    assert run["host"] == "g1" and run["program"]["sudo_user"] == "nobody"
    # group_id names a group: never a host of that name.
    missing = _submit(server, "ps/shell", group_id="g1", who="nobody")
    assert missing["host"] is None and missing["state"] == "error"
    assert missing["message"] == "no host group 'g1' in the config's host_groups: (groups: default, gpu)"


def test_procstar_without_a_default_group_says_so(running, jobs_dir):
    write_job(jobs_dir, "ps/argv", "program: {type: procstar, argv: [/usr/bin/env]}\n")
    server = running()
    run = _submit(server, "ps/argv")
    assert run["state"] == "error"
    assert run["message"] == "no host group 'default' in the config's host_groups: (groups: none in the config)"
