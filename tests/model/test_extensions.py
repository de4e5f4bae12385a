"""Extensions register types through the registry; nothing named in YAML is imported."""

import subprocess
import sys
import textwrap
import time

from conftest import Server, write_job

EXTENSION = '''
from typing import ClassVar

from apsis_lite.model.programs import ShellProgram
from apsis_lite.model.registry import PROGRAMS


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


# -- extensions cannot wedge the engine ---------------------------------------------

MISBEHAVING = '''
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from apsis_lite.model.conditions import OK, Condition, Verdict
from apsis_lite.model.programs import Outcome, Program, ServerProgram
from apsis_lite.model.registry import CONDITIONS, PROGRAMS, SCHEDULES
from apsis_lite.model.schedules import Schedule, nonempty_text


@PROGRAMS.register("count-lines")
@dataclass(frozen=True, kw_only=True)
class CountLines(ServerProgram):
    """Runs in the server: counts the lines of a file; fails on an empty one."""

    type_name: ClassVar[str] = "count-lines"
    path: str

    @classmethod
    def _read(cls, f, allow_templates):
        return {**super()._read(f, allow_templates), "path": f.take("path", nonempty_text)}

    def to_jso(self):
        return {**super().to_jso(), "path": self.path}

    def run(self, context):
        with open(self.path) as f:
            n = sum(1 for _ in f)
        return Outcome(success=n > 0, message=f"{n} lines", output=f"{self.path}: {n} lines\\n")


@PROGRAMS.register("explode")
@dataclass(frozen=True, kw_only=True)
class Explode(ServerProgram):
    type_name: ClassVar[str] = "explode"

    def run(self, context):
        raise RuntimeError("boom")


@PROGRAMS.register("hang")
@dataclass(frozen=True, kw_only=True)
class Hang(ServerProgram):
    type_name: ClassVar[str] = "hang"

    def run(self, context):
        while not context.stopping.wait(0.05):
            pass
        return Outcome(message="noticed the stop")


@PROGRAMS.register("nothing")
@dataclass(frozen=True)
class Nothing(Program):
    """Neither a process nor an in-server program."""

    type_name: ClassVar[str] = "nothing"

    @classmethod
    def _read(cls, f, allow_templates):
        return {}


@CONDITIONS.register("file-exists")
@dataclass(frozen=True)
class FileExists(Condition):
    type_name: ClassVar[str] = "file-exists"
    poll_interval: ClassVar[float] = 0.3
    path: str

    @classmethod
    def _read(cls, f, allow_templates):
        return {"path": f.take("path", nonempty_text)}

    def to_jso(self):
        return {"type": "file-exists", "path": self.path}

    def check(self, run, ctx):
        return OK if os.path.exists(self.path) else Verdict(False, f"waiting for {self.path}")


@CONDITIONS.register("raises")
@dataclass(frozen=True)
class Raises(Condition):
    type_name: ClassVar[str] = "raises"

    @classmethod
    def _read(cls, f, allow_templates):
        return {}

    def to_jso(self):
        return {"type": "raises"}

    def check(self, run, ctx):
        raise ValueError("a condition's own bug")


@SCHEDULES.register("fragile")
@dataclass(frozen=True)
class Fragile(Schedule):
    """One slot a second, until its iterator raises."""

    type_name: ClassVar[str] = "fragile"

    @classmethod
    def _read(cls, f):
        return {}

    def _jso(self):
        return {}

    def describe(self):
        return "fragile"

    def times(self, start):
        raise ZeroDivisionError("planning bug in an extension")
        yield
'''


def misbehaving_server(jobs_dir, data_dir, tmp_path):
    (tmp_path / "misbehaving_ext.py").write_text(MISBEHAVING)
    cfg = data_dir / "config.yaml"
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg.write_text("extensions: [misbehaving_ext]\n")
    return Server(jobs_dir, data_dir, extra_args=["--config", str(cfg)], env={"PYTHONPATH": str(tmp_path)})


def test_misbehaving_extensions_end_their_own_runs_and_nothing_else(jobs_dir, data_dir, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("a\nb\nc\n")
    flag = tmp_path / "flag"
    write_job(jobs_dir, "count", f"program: {{type: count-lines, path: {lines}}}")
    write_job(jobs_dir, "explode", "program: {type: explode}")
    write_job(jobs_dir, "hang", "program: {type: hang, timeout: 1s}")
    write_job(jobs_dir, "hang-long", "program: {type: hang}")
    write_job(jobs_dir, "nothing", "program: {type: nothing}")
    write_job(jobs_dir, "waiter", f"""
        program: echo waited
        condition: {{type: file-exists, path: {flag}}}
    """)
    write_job(jobs_dir, "bad-condition", """
        program: echo never
        condition: {type: raises}
    """)
    write_job(jobs_dir, "fragile", "program: {type: no-op}\nschedule: {type: fragile}")
    write_job(jobs_dir, "ticker", "program: echo tick\nschedule: {type: interval, interval: 1s}")
    srv = misbehaving_server(jobs_dir, data_dir, tmp_path).start()
    try:
        errors = {e["path"].rsplit("/", 1)[-1]: e["message"] for e in srv.get("/api/v1/jobs")["errors"]}
        assert "defines neither argv() (a process) nor run()" in errors["nothing.yaml"]
        srv.wait_for(lambda: any("fragile.yaml" in e["path"] for e in srv.get("/api/v1/jobs")["errors"]),
                     what="the fragile job to be marked broken")
        broken = [e for e in srv.get("/api/v1/jobs")["errors"] if "fragile.yaml" in e["path"]][0]
        assert "cannot be scheduled" in broken["message"] and "ZeroDivisionError" in broken["message"]
        assert "ZeroDivisionError" in srv.get("/api/v1/jobs/fragile")["broken"]
        for page in ("/jobs", "/jobs/fragile", "/calendar", "/calendar?view=week", "/calendar/day"):
            status, body, _ = srv.request("GET", page)
            assert status == 200 and b"internal error" not in body, (page, status)
        assert b"This job cannot be scheduled" in srv.request("GET", "/jobs/fragile")[1]

        run = lambda job: srv.post("/api/v1/runs", {"job_id": job})["run_id"]
        counted = srv.wait_run(run("count"))
        assert counted["state"] == "success" and counted["message"] == "3 lines"
        assert srv.request("GET", f"/api/v1/runs/{counted['run_id']}/output")[1] == f"{lines}: 3 lines\n".encode()
        exploded = srv.wait_run(run("explode"))
        assert exploded["state"] == "error" and "RuntimeError: boom" in exploded["message"]
        hung = srv.wait_run(run("hang"), timeout=10)
        assert hung["state"] == "error" and "did not finish within its time limit of 1.0 s" in hung["message"]
        long_id = run("hang-long")
        srv.wait_run(long_id, states=("running",))
        status, body, _ = srv.request("POST", f"/api/v1/runs/{long_id}/signal/USR1")
        assert status == 409 and b"no process to signal" in body
        stopped = srv.post(f"/api/v1/runs/{long_id}/stop")
        assert stopped["state"] == "failure" and "stopped" in stopped["message"]

        bad = srv.wait_run(run("bad-condition"))
        assert bad["state"] == "error" and "a condition's own bug" in bad["message"]
        waiting = run("waiter")
        srv.wait_run(waiting, states=("waiting",))
        time.sleep(1)
        assert srv.get(f"/api/v1/runs/{waiting}")["state"] == "waiting"
        flag.write_text("")
        assert srv.wait_run(waiting, timeout=5)["state"] == "success"  # polled, not left waiting

        # Through all of it the engine went on: the interval job kept running.
        srv.wait_for(lambda: len(srv.runs("job:ticker state:success")) >= 4, timeout=10, what="ticks")
        status, body, _ = srv.request("GET", "/api/v1/alive", token=False)
        assert status == 200, body
        assert "Traceback" not in srv.cli("jobs").stderr
    finally:
        srv.stop()


def test_an_in_server_run_cut_short_by_a_restart_is_an_error(jobs_dir, data_dir, tmp_path):
    write_job(jobs_dir, "hang-long", "program: {type: hang}")
    srv = misbehaving_server(jobs_dir, data_dir, tmp_path).start()
    try:
        run_id = srv.post("/api/v1/runs", {"job_id": "hang-long"})["run_id"]
        srv.wait_run(run_id, states=("running",))
        srv.kill()
        srv.start()
        run = srv.wait_run(run_id)
        assert run["state"] == "error" and "the server stopped while it ran" in run["message"]
    finally:
        srv.stop()


def test_an_extension_written_against_the_old_module_names_still_loads():
    # Before the package was split into parts, extensions imported
    # apsis_lite.programs, .registry, .schedules, .conditions and .actions.
    code = textwrap.dedent("""
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from apsis_lite.programs import ShellProgram
            from apsis_lite.registry import PROGRAMS
            from apsis_lite.schedules import Schedule, nonempty_text
            from apsis_lite.conditions import Condition
            from apsis_lite.actions import Action
        import apsis_lite.programs, apsis_lite.model.programs, apsis_lite.extend
        assert apsis_lite.programs is apsis_lite.model.programs
        assert ShellProgram is apsis_lite.extend.ShellProgram and PROGRAMS is apsis_lite.extend.PROGRAMS
        print(sorted({str(w.message).split(" is now")[0] for w in caught
                      if issubclass(w.category, DeprecationWarning)}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(["apsis_lite.actions", "apsis_lite.conditions",
                                              "apsis_lite.programs", "apsis_lite.registry",
                                              "apsis_lite.schedules"]))
