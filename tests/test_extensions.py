"""Extensions register types through the registry; nothing named in YAML is imported."""

import textwrap

from conftest import Server, write_job

EXTENSION = '''
from typing import ClassVar

from apsis_lite.programs import ShellProgram
from apsis_lite.registry import PROGRAMS


@PROGRAMS.register("greet", aliases=("greeter_ext.GreetProgram",))
class GreetProgram(ShellProgram):
    """A shell program that greets first."""

    type_name: ClassVar[str] = "greet"

    def argv(self):
        return ["/bin/bash", "-c", "echo greetings; " + self.command]

    def to_jso(self):
        return {**super().to_jso(), "type": "greet"}
'''


def test_extension_program_type(jobs_dir, data_dir, tmp_path):
    (tmp_path / "greeter_ext.py").write_text(EXTENSION)
    cfg = data_dir / "config.yaml"
    cfg.write_text("extensions: [greeter_ext]\n")
    write_job(jobs_dir, "hello", """
        program:
          type: greeter_ext.GreetProgram
          command: echo hi
    """)
    env = {"PYTHONPATH": str(tmp_path)}
    srv = Server(jobs_dir, data_dir, extra_args=["--config", str(cfg)], env=env)
    srv.start()
    try:
        assert srv.get("/api/v1/jobs")["errors"] == []
        run = srv.wait_run(srv.post("/api/v1/runs", {"job_id": "hello"})["run_id"])
        assert run["state"] == "success"
        assert srv.request("GET", f"/api/v1/runs/{run['run_id']}/output")[1] == b"greetings\nhi\n"
        # Without the extension the same file is a clear load error, not an import.
        plain = srv.cli("check-jobs", str(jobs_dir))
        assert plain.returncode == 1
        assert "unknown program type 'greeter_ext.GreetProgram'" in plain.stderr
    finally:
        srv.stop()


def test_missing_extension_is_a_clear_error(jobs_dir, data_dir):
    cfg = data_dir / "config.yaml"
    cfg.write_text(textwrap.dedent("extensions: [no_such_extension_module]\n"))
    srv = Server(jobs_dir, data_dir, extra_args=["--config", str(cfg)])
    try:
        srv.start(timeout=30)
        raise AssertionError("server started with a missing extension")
    except RuntimeError as exc:
        assert "no_such_extension_module" in str(exc)
        assert "Traceback" not in str(exc)
