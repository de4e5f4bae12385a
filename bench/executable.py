#!/usr/bin/env python3
"""The one-file executable: size, cold start and a client command's start-up.

Cold start is the time from spawning ``dist/apsis-lite serve`` (fresh data
folder, one job) to its first successful ``/api/v1/alive``; each start
unpacks the bundle again, as a user's would. The same is measured for the
Python package (``python -m apsis_lite serve``) for comparison, and the
wall time of ``apsis-lite --version`` (every CLI command pays it).

    bench/executable.py                  # 5 starts each; builds dist/apsis-lite if missing
    bench/executable.py --starts 10 --exe /path/to/apsis-lite
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from common import ROOT, figure, median, note, tmpdir, write_job


def cold_start(cmd, env):
    """Seconds from spawning ``cmd`` (a ``serve`` command line, without --data) to the first /alive."""
    home = tmpdir("exe")
    jobs, data = os.path.join(home, "jobs"), os.path.join(home, "data")
    write_job(jobs, "hello", 'program: "echo hello"\n')
    url_file = os.path.join(data, "server.url")
    started = time.monotonic()
    proc = subprocess.Popen(cmd + ["--jobs", jobs, "--data", data, "--port", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home)
    try:
        while time.monotonic() - started < 60:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited with {proc.returncode}")
            try:
                with open(url_file) as f:
                    url = f.read().strip()
                with urllib.request.urlopen(url + "/api/v1/alive", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except (OSError, ValueError):  # not written yet, or not answering yet
                pass
            time.sleep(0.01)
        raise SystemExit(f"{cmd[0]}: no /alive within 60 s")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        _stop_agent(data)
        shutil.rmtree(home, ignore_errors=True)


def _stop_agent(data):
    try:
        with open(os.path.join(data, "agent", "agent.pid")) as f:
            os.kill(int(f.read().split()[0]), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass


def wall(cmd, env):
    started = time.monotonic()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_exe = os.path.join(ROOT, "dist", "apsis-lite")
    parser.add_argument("--exe", default=default_exe)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    if not os.path.exists(args.exe) and args.exe != default_exe:
        parser.error(f"--exe: no executable at {args.exe}")
    if not os.path.exists(args.exe):
        note("building dist/apsis-lite")
        started = time.monotonic()
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "pyinstaller"), "--noconfirm",
                        "--log-level", "WARN", "build.spec"], cwd=ROOT, check=True)
        figure("build time", time.monotonic() - started, "s", fmt="{:.0f}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APSIS_LITE")}
    figure("executable size", os.path.getsize(args.exe) / 1024 / 1024, "MB", target="< 40 MB")
    exe_times = [cold_start([args.exe, "serve"], env) for _ in range(args.starts)]
    figure("executable cold start, median", median(exe_times), "s", target="< 2 s", fmt="{:.2f}")
    figure("executable cold start, max", max(exe_times), "s", fmt="{:.2f}")
    pkg_times = [cold_start([sys.executable, "-m", "apsis_lite", "serve"], {**env, "PYTHONPATH": ROOT})
                 for _ in range(args.starts)]
    figure("package cold start, median", median(pkg_times), "s", fmt="{:.2f}")
    figure("executable --version, median",
           median([wall([args.exe, "--version"], env) for _ in range(args.starts)]), "s", fmt="{:.2f}")


if __name__ == "__main__":
    main()
