"""Shared helpers for the benchmarks: a real server process, HTTP, figures.

Every benchmark starts a real ``apsis-lite serve`` on 127.0.0.1 with a fresh
jobs folder and data folder under /tmp (short paths: Unix socket paths are
limited to 107 bytes), and stops the server and its agent when it ends, even
on errors. Figures are printed one per line as ``name: value unit``, with the
target next to them when there is one.
"""

import atexit
import argparse
import contextlib
import http.client as httpclient
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

import apsw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- output ------------------------------------------------------------------

def figure(name, value, unit="", target=None, fmt=None):
    """Print one figure line: ``name: value unit  [target: ...]``."""
    if isinstance(value, float):
        text = (fmt or "{:.1f}").format(value)
    else:
        text = str(value)
    line = f"{name}: {text}" + (f" {unit}" if unit else "")
    if target:
        line += f"    [target: {target}]"
    print(line, flush=True)


def note(text):
    """Informational line (not a figure); prefixed so run_all can tell them apart."""
    print(f"# {text}", flush=True)


def pct(values, p):
    """The p-th percentile (nearest rank) of ``values``; nan if empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def median(values):
    return statistics.median(values) if values else float("nan")


# -- folders -------------------------------------------------------------------

def tmpdir(prefix):
    """A fresh folder under $BENCH_TMP (default /tmp), where the data and jobs go."""
    return tempfile.mkdtemp(prefix=f"ab-{prefix}-", dir=os.environ.get("BENCH_TMP") or "/tmp")


def write_job(jobs_dir, job_id, text):
    path = os.path.join(jobs_dir, job_id + ".yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def forget_server(data_dir):
    """Remove the url and pid files a stopped server left in a data folder reused by a benchmark."""
    for name in ("server.url", "server.pid"):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(data_dir, name))


def date_job(schedule: str) -> str:
    """A job whose program prints when it started (seconds since the epoch, to the ns)
    and whose ``schedule:`` is the YAML ``schedule`` (its lines indented under the key)."""
    return ("params: [time]\nprogram:\n  type: program\n  argv: [/bin/date, \"+%s.%N\"]\n"
            "schedule:\n" + "".join(f"  {line}\n" for line in schedule.strip().splitlines()))


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(round((t % 1) * 1e6)):06d}Z"


# -- /proc -----------------------------------------------------------------------

def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()


def cpu_seconds(pid):
    """utime + stime of ``pid`` in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds(pid):
    """cutime + cstime of ``pid``: CPU of its reaped children (for the agent: its
    shepherds and, through them, the programs)."""
    fields = _stat_fields(pid)
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def descendants_cpu(parent):
    """{pid: utime + stime + cutime + cstime in seconds} of the live children of
    ``parent`` (for the agent: its shepherds, with the programs they reaped)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except OSError:
            continue
        if int(fields[1]) == parent:
            found[int(entry)] = sum(int(x) for x in fields[11:15]) / CLK_TCK
    return found


def system_cpu():
    """(busy, total) jiffies over all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


class CpuMeter:
    """CPU used by the server, the agent, the agent's children, and the whole machine."""

    def __init__(self, server):
        self.server = server
        self.start = self._sample()

    def _sample(self):
        agent = self.server.agent_pid()
        a = ac = 0.0
        live = {}
        if agent:
            try:
                a, ac = cpu_seconds(agent), children_cpu_seconds(agent)
                live = descendants_cpu(agent)
            except OSError:
                pass
        busy, total = system_cpu()
        return (time.time(), cpu_seconds(self.server.pid), a, ac, live, busy, total,
                time.process_time())

    def stop(self):
        end = self._sample()
        t0, s0, a0, c0, live0, b0, tot0, p0 = self.start
        t1, s1, a1, c1, live1, b1, tot1, p1 = end
        wall = t1 - t0
        ncpu = os.cpu_count() or 1
        busy_cores = (b1 - b0) / max(1, tot1 - tot0) * ncpu
        # Shepherds outlive their runs (idle ones wait for the next): count the live
        # ones from /proc, and the ones that exited from the agent's reaped total.
        shepherds = ((c1 - c0) - sum(cpu for pid, cpu in live0.items() if pid not in live1)
                     + sum(cpu - live0.get(pid, 0.0) for pid, cpu in live1.items()))
        ours = (s1 - s0) + (a1 - a0) + shepherds + (p1 - p0)
        return {"wall": wall, "server": s1 - s0, "agent": a1 - a0, "shepherds": max(0.0, shepherds),
                "machine_busy_pct": busy_cores / ncpu * 100,
                # Kernel threads (journal, writeback) and anything else on the machine.
                "other_pct_of_core": max(0.0, busy_cores * wall - ours) / wall * 100}


# -- HTTP ------------------------------------------------------------------------------

class HTTPError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


#: Each benchmark server's local token (from its data folder), by URL: every request
#: is authenticated, as the CLI's are.
TOKENS = {}


def request(url, method="GET", path="/", body=None, timeout=60):
    """One request on a fresh connection (no keep-alive); returns (status, bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Connection": "close"}
        token = TOKENS.get(url)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get_json(url, path, timeout=60):
    status, data = request(url, "GET", path, timeout=timeout)
    if status >= 400:
        raise HTTPError(status, data)
    return json.loads(data)


def post_json(url, path, body, timeout=60):
    status, data = request(url, "POST", path, body, timeout=timeout)
    if status >= 400:
        raise HTTPError(status, data)
    return json.loads(data)


# -- the server ----------------------------------------------------------------------------

class Server:
    """An ``apsis-lite serve`` subprocess; a context manager that always cleans up.

    ``start()`` returns once ``/api/v1/alive`` answers, and records
    ``startup_s``: from just before the process is spawned to that first
    successful answer.
    """

    def __init__(self, jobs_dir, data_dir, config=None, extra_args=(), keep=False, entry=None, source=ROOT):
        self.entry = entry or ["-m", "apsis_lite"]  # what runs ``serve``: the package, or a wrapper script
        self.jobs_dir = jobs_dir
        # The checkout whose apsis_lite runs (another one for an A/B comparison).
        self.source = source
        self.data_dir = data_dir
        self.config = config
        self.extra_args = list(extra_args)
        self.keep = keep
        self.proc = None
        self.url = None
        self.startup_s = None
        self.listening_s = None
        self.log_path = os.path.join(data_dir, "bench-server.log")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=120, poll=0.01):
        os.makedirs(self.data_dir, exist_ok=True)
        url_file = os.path.join(self.data_dir, "server.url")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(url_file)
        args = [sys.executable, *self.entry, "serve", "--jobs", self.jobs_dir,
                "--data", self.data_dir, "--port", "0"]
        if self.config:
            path = os.path.join(self.data_dir, "bench-config.yaml")
            with open(path, "w") as f:
                for k, v in self.config.items():
                    f.write(f"{k}: {json.dumps(v)}\n")
            args += ["--config", path]
        args += self.extra_args
        if os.environ.get("BENCH_EATMYDATA"):
            # Diagnostic only: every fsync in the server, agent and shepherds becomes a
            # no-op (Debian's eatmydata), to see what durability costs.
            args = ["eatmydata"] + args
        self._log = open(self.log_path, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.source,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /alive within {timeout}s:\n{self.log_tail()}")
            if self.url is None:
                try:
                    with open(url_file) as f:
                        self.url = f.read().strip() or None
                    if self.url:
                        self.listening_s = time.perf_counter() - t0
                        with open(os.path.join(self.data_dir, "token")) as f:
                            TOKENS[self.url] = f.read().strip()
                except FileNotFoundError:
                    pass
            if self.url:
                try:
                    status, _ = request(self.url, "GET", "/api/v1/alive", timeout=5)
                    if status == 200:
                        self.startup_s = time.perf_counter() - t0
                        self._start_profiler()
                        return self
                except OSError:
                    pass
            time.sleep(poll)

    def _start_profiler(self):
        """With BENCH_PROFILE=DIR, sample the server and its children (the agent and
        its shepherds) with py-spy (BENCH_PYSPY names the binary) into DIR; with
        BENCH_PROFILE_IDLE=1, samples blocked in system calls (fsync, epoll) count too."""
        out = os.environ.get("BENCH_PROFILE")
        self._spy = None
        if not out:
            return
        os.makedirs(out, exist_ok=True)
        spy = os.environ.get("BENCH_PYSPY") or shutil.which("py-spy") or "py-spy"
        label = os.environ.get("BENCH_LABEL") or os.path.basename(sys.argv[0]).replace(".py", "")
        path = os.path.join(out, f"{label}-{self.proc.pid}.txt")
        extra = ["--idle"] if os.environ.get("BENCH_PROFILE_IDLE") else []
        self._spy = subprocess.Popen([spy, "record", "-p", str(self.proc.pid), "-s", "-f", "raw",
                                      "--nonblocking", "-o", path, *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        note(f"profiling pid {self.proc.pid} into {path}")

    def _stop_profiler(self):
        spy = getattr(self, "_spy", None)
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        self._spy = None

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def agent_pid(self):
        try:
            with open(os.path.join(self.data_dir, "agent", "agent.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def get(self, path, **kw):
        return get_json(self.url, path, **kw)

    def post(self, path, body, **kw):
        return post_json(self.url, path, body, **kw)

    def stop(self):
        """SIGTERM the server (SIGKILL if it lingers), then its agent."""
        self._stop_profiler()
        agent = self.agent_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        agent = self.agent_pid() or agent
        if agent:
            _kill_pid(agent)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def db(self):
        """A read-only apsw connection to the server's database."""
        conn = apsw.Connection(os.path.join(self.data_dir, "apsis-lite.db"),
                               flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(10_000)
        return conn


def _kill_pid(pid):
    # Only the agent whose pid file we read, and only if it still is an agent.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return
    if b"agent" not in cmd:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().split(b") ")[1][:1] == b"Z":
                    return
        except OSError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def cleanup(*dirs):
    """Remove a benchmark's folders, later.

    Deleting a server's tens of thousands of files slows every file creation
    for a minute or more after it on some file systems (ext4 without a
    journal skips recently freed inodes), which would tax the next benchmark
    with this one's garbage. So folders are moved aside and deleted when this
    process exits or, with BENCH_TRASH=DIR (``run_all.py`` sets it), by
    whoever set it, after the last benchmark.
    """
    if os.environ.get("BENCH_KEEP"):
        note(f"kept {' '.join(dirs)}")
        return
    trash = os.environ.get("BENCH_TRASH") or _own_trash()
    os.makedirs(trash, exist_ok=True)
    for d in dirs:
        try:
            os.rename(d, os.path.join(trash, os.path.basename(d)))
        except OSError:
            shutil.rmtree(d, ignore_errors=True)


_TRASH = []


def _own_trash():
    if not _TRASH:
        _TRASH.append(tmpdir("trash"))
        atexit.register(shutil.rmtree, _TRASH[0], True)
    return _TRASH[0]


def wait_all_finished(server, expected, timeout, poll=0.05):
    """Poll /stats until ``expected`` runs are in a finished state; returns the wall time
    (time.time()) they were first seen, or None on timeout. The data folder is fresh,
    so every run counted belongs to the benchmark."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n, _ = finished_count(server)
        if n >= expected:
            return time.time()
        time.sleep(poll)
    return None


def finished_count(server):
    st = server.get("/api/v1/stats")
    by = st.get("runs_by_state", {})
    return sum(by.get(s, 0) for s in ("success", "failure", "error", "skipped")), by


def program_start_times(conn, where="1", params=()):
    """{run_id: (time_schedule, args, state, times, program_clock or None)} from the DB.

    The program is ``date +%s.%N``: its output is its own clock reading at start.
    """
    rows = conn.execute(
        f"SELECT r.run_id, r.time_schedule, r.args, r.state, r.times, o.data FROM runs r"
        f" LEFT JOIN outputs o ON o.run_id = r.run_id WHERE {where}", params).fetchall()
    out = {}
    for rid, ts, args, state, times, data in rows:
        clock = None
        if data:
            with contextlib.suppress(ValueError):
                clock = float(bytes(data).decode().strip())
        out[rid] = (ts, json.loads(args), state, json.loads(times), clock)
    return out


def size_args(parser, small_help="quick run", large_help="full size (default)"):
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--small", action="store_true", help=small_help)
    g.add_argument("--large", action="store_true", help=large_help)


def stored_runs_main(bench, description, jobs, requests):
    """The command line of a benchmark over a database of many stored runs: parse it
    and call ``bench(n_runs, n_jobs, n_requests, cap, reuse, jobs_dir)``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "100,000 runs", "1,000,000 runs (default)")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--jobs", type=int, default=jobs)
    parser.add_argument("--requests", type=int, default=requests, help="requests per page or endpoint")
    parser.add_argument("--cap", type=float, default=20.0, help="seconds at most per page or endpoint")
    parser.add_argument("--reuse", help="a data folder filled before (kept)")
    parser.add_argument("--jobs-dir", help="with --reuse: its jobs folder")
    args = parser.parse_args()
    n = args.runs or (100_000 if args.small else 1_000_000)
    bench(n, args.jobs, args.requests, args.cap, args.reuse, args.jobs_dir)
