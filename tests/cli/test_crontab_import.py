"""``apsis-lite import-crontab``: a realistic crontab becomes a jobs folder that
passes ``check-jobs``, runs at the times cron would (written out by hand from
the calendar), and runs the same commands with the same shell, env, working
folder and standard input.
"""

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest
from conftest import ROOT

from apsis_lite.cli.crontab_import import job_name, parse_crontab, split_percent, unique_ids
from apsis_lite.cli.offline import due_times
from apsis_lite.model.jobs import bind_program, load_jobs_dir

UTC = timezone.utc

CRONTAB = textwrap.dedent("""\
    # Edit this file to introduce tasks to be run by cron.
    #
    # m h  dom mon dow   command
    MAILTO=ops@example.com
    PATH=/usr/local/bin:/usr/bin:/bin
    GREETING = "  hello  "

    # Rotate the logs.
    # Runs before the nightly backup.
    15 1 * * * /usr/sbin/logrotate /etc/logrotate.conf

    # Nightly backup on weekdays.
    30 2 * * 1-5 /usr/local/bin/backup.sh --full > /var/log/backup.log 2>&1
    */20 9-17 * * mon-fri cd /srv/app && ./manage.py clearsessions
    # 0 5 * * * /usr/bin/old-report
    @reboot /usr/local/bin/start-tunnel
    45 23 * * * echo "shell=$0 greeting=[$GREETING] pwd=$(pwd)"

    CRON_TZ=America/New_York
    SHELL=/bin/bash
    HOME={home}
    MAILTO=""
    # Close-of-day note, typed on standard input.
    0 16 1,15 * 5 tr a-z A-Z%market closed%100\\% done
    @monthly echo '{{{{ not a template }}}} {{\\% raw \\%}} ${{#HOME}}' "$GREETING"
    0 0 29 2 * /usr/local/bin/backup.sh --leap # {{\\% endraw \\%}}
""")


def apsis(*args, env=None):
    result = subprocess.run([sys.executable, "-m", "apsis_lite", *map(str, args)],
                            capture_output=True, text=True, timeout=30, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


@pytest.fixture
def imported(tmp_path):
    """The crontab imported into tmp_path/jobs: (result, jobs folder, home folder)."""
    home = tmp_path / "home"
    home.mkdir()
    crontab = tmp_path / "crontab"
    crontab.write_text(CRONTAB.format(home=home))
    out = tmp_path / "jobs"
    result = apsis("import-crontab", crontab, out, "--tz", "Europe/London")
    return result, out, home


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def times(job, start, n):
    return [t for t, _ in due_times(job, start, n)]


def test_import_writes_one_job_per_entry_and_reports_what_needs_attention(imported):
    result, out, _ = imported
    assert result.returncode == 1  # @reboot could not be imported
    assert result.stdout.splitlines() == [
        f"wrote 7 job files to {out}:",
        "  logrotate.yaml  line 10: 15 1 * * * in Europe/London",
        "  backup.yaml  line 13: 30 2 * * 1-5 in Europe/London",
        "  manage-clearsessions.yaml  line 14: */20 9-17 * * mon-fri in Europe/London",
        "  echo.yaml  line 17: 45 23 * * * in Europe/London",
        "  tr-a-z-a-z.yaml  line 24: 0 16 1,15 * 5 in America/New_York",
        "  echo-not-a-template-raw-home-greeting.yaml  line 25: @monthly in America/New_York",
        "  backup-2.yaml  line 26: 0 0 29 2 * in America/New_York",
        "needs attention:",
        "  not imported: line 16: @reboot is not supported (apsis-lite runs programs at times, not "
        "at boot; start it from the init system instead): /usr/local/bin/start-tunnel",
        "  line 15: commented out, not imported: 0 5 * * * /usr/bin/old-report",
        r"  line 24: the text after '%' is the command's standard input, as in cron (write \% for a "
        "literal percent sign)",
        "  MAILTO=ops@example.com: cron mailed output there; add an action to logrotate, backup, "
        "manage-clearsessions, echo (each file has a commented example)",
    ]
    assert sorted(os.listdir(out)) == sorted(
        line.split()[0] for line in result.stdout.splitlines()[1:8])


def test_the_imported_folder_passes_check_jobs(imported):
    _, out, _ = imported
    result = apsis("check-jobs", out, "--strict")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "7 jobs loaded, 0 problems\n"


def test_job_files_keep_comments_mail_advice_and_the_crontab_line(imported):
    _, out, home = imported
    text = (out / "logrotate.yaml").read_text()
    assert text.startswith(
        "# Imported from crontab line 10:\n"
        "#   15 1 * * * /usr/sbin/logrotate /etc/logrotate.conf\n"
        "# The crontab had MAILTO=ops@example.com: cron mailed any output of this job there.\n")
    assert "#     to: ops@example.com\n" in text
    jobs, errors = load_jobs_dir(out)
    assert errors == []
    logrotate = jobs["logrotate"]
    assert logrotate.metadata == {
        "description": "Rotate the logs.\nRuns before the nightly backup.",
        "labels": ["crontab"],
        "crontab": "15 1 * * * /usr/sbin/logrotate /etc/logrotate.conf",
    }
    # The field header and the boilerplate above it are not a description.
    assert "description" not in jobs["manage-clearsessions"].metadata
    assert jobs["backup"].metadata["description"] == "Nightly backup on weekdays."
    # SHELL is /bin/sh until the crontab sets /bin/bash; env lines apply to the entries after them.
    assert logrotate.program == {
        "type": "program",
        "argv": ["/bin/sh", "-c", "/usr/sbin/logrotate /etc/logrotate.conf"],
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "GREETING": "  hello  "},
    }
    leap = jobs["backup-2"].program
    assert leap["type"] == "shell"
    assert leap["env"] == {"PATH": "/usr/local/bin:/usr/bin:/bin", "GREETING": "  hello  ",
                           "HOME": str(home)}
    assert leap["cwd"] == str(home)
    assert "MAILTO" not in (out / "backup-2.yaml").read_text()  # MAILTO="" turned mail off
    # Template syntax in commands is text: binding gives back the command as written.
    assert bind_program(jobs["backup-2"], {}).command == \
        "/usr/local/bin/backup.sh --leap # {% endraw %}"
    assert bind_program(jobs["echo-not-a-template-raw-home-greeting"], {}).command == \
        "echo '{{ not a template }} {% raw %} ${#HOME}' \"$GREETING\""


def test_imported_jobs_are_due_when_cron_would_run_them(imported):
    _, out, _ = imported
    jobs, _ = load_jobs_dir(out)
    # 01:15 London: on 29 March 2026 01:15 does not exist (01:00 GMT -> 02:00 BST) and
    # cron runs it at the first minute after the gap; on 25 October it occurs twice and
    # cron runs it once, at the first.
    assert times(jobs["logrotate"], utc(2026, 3, 28), 3) == [
        utc(2026, 3, 28, 1, 15), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 15)]
    assert times(jobs["logrotate"], utc(2026, 10, 24), 3) == [
        utc(2026, 10, 24, 0, 15), utc(2026, 10, 25, 0, 15), utc(2026, 10, 26, 1, 15)]
    # Weekdays at 02:30 London: Friday 27 March (GMT), then Monday 30 and Tuesday 31 (BST).
    assert times(jobs["backup"], utc(2026, 3, 27), 3) == [
        utc(2026, 3, 27, 2, 30), utc(2026, 3, 30, 1, 30), utc(2026, 3, 31, 1, 30)]
    # Every 20 minutes from 09:00 to 17:40, Monday to Friday.
    assert times(jobs["manage-clearsessions"], utc(2026, 3, 27, 16, 30), 5) == [
        utc(2026, 3, 27, 16, 40), utc(2026, 3, 27, 17, 0), utc(2026, 3, 27, 17, 20),
        utc(2026, 3, 27, 17, 40), utc(2026, 3, 30, 8, 0)]
    # 16:00 New York on the 1st and 15th, or on Fridays (cron's OR rule for day fields).
    assert times(jobs["tr-a-z-a-z"], utc(2026, 1, 1), 8) == [
        utc(2026, 1, 1, 21), utc(2026, 1, 2, 21), utc(2026, 1, 9, 21), utc(2026, 1, 15, 21),
        utc(2026, 1, 16, 21), utc(2026, 1, 23, 21), utc(2026, 1, 30, 21), utc(2026, 2, 1, 21)]
    # Midnight New York on the 1st: EST, EST, then EDT.
    assert times(jobs["echo-not-a-template-raw-home-greeting"], utc(2026, 1, 15), 3) == [
        utc(2026, 2, 1, 5), utc(2026, 3, 1, 5), utc(2026, 4, 1, 4)]
    # 29 February only.
    assert times(jobs["backup-2"], utc(2026, 1, 1), 2) == [utc(2028, 2, 29, 5), utc(2032, 2, 29, 5)]


def test_imported_jobs_run_with_crons_shell_env_folder_and_stdin(imported):
    _, out, home = imported
    sh = apsis("try", out, "echo", "--run",
               env={"HOME": str(home.parent)})
    assert sh.returncode == 0, sh.stderr
    assert sh.stdout == f"shell=/bin/sh greeting=[  hello  ] pwd={home.parent}\n"
    # '%' ends the command; the rest is stdin, each further '%' a newline, '\%' a percent sign.
    tr = apsis("try", out, "tr-a-z-a-z", "--run")
    assert tr.returncode == 0, tr.stderr
    assert tr.stdout == "MARKET CLOSED\n100% DONE\n"
    echo = apsis("try", out, "echo-not-a-template-raw-home-greeting", "--run")
    assert echo.stdout == "{{ not a template }} {% raw %} ${#HOME}   hello  \n"


def test_existing_files_are_kept_unless_forced(imported, tmp_path):
    _, out, _ = imported
    (out / "backup.yaml").write_text("program: echo mine\n")
    crontab = tmp_path / "crontab"
    again = apsis("import-crontab", crontab, out, "--tz", "Europe/London")
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr == "\n".join(
        f"{out}/{name}.yaml: already exists" for name in [
            "logrotate", "backup", "manage-clearsessions", "echo",
            "tr-a-z-a-z", "echo-not-a-template-raw-home-greeting", "backup-2"]
    ) + "\nError: 7 files already exist; nothing written (--force replaces them)\n"
    assert (out / "backup.yaml").read_text() == "program: echo mine\n"
    forced = apsis("import-crontab", crontab, out, "--tz", "Europe/London", "--force")
    assert forced.returncode == 1  # still the @reboot line
    assert (out / "backup.yaml").read_text().startswith("# Imported from crontab line 13:")


def test_the_default_zone_is_the_machines_and_stdin_can_be_the_crontab(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "apsis_lite", "import-crontab", "-", str(tmp_path / "out")],
        input="0 9 * * * echo morning\n", capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "TZ": "Asia/Tokyo"}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"wrote 1 job file to {tmp_path / 'out'}:\n"
                             "  echo-morning.yaml  line 1: 0 9 * * * in Asia/Tokyo\n")
    jobs, _ = load_jobs_dir(tmp_path / "out")
    assert times(jobs["echo-morning"], utc(2026, 6, 1), 1) == [utc(2026, 6, 1, 0)]


def test_bad_lines_are_reported_and_the_rest_imported(tmp_path):
    crontab = tmp_path / "crontab"
    crontab.write_text(textwrap.dedent("""\
        61 * * * * echo bad minute
        0 9 * * echo too few fields
        CRON_TZ=Mars/Olympus
        0 9 * * * echo on mars
        CRON_TZ=UTC
        @fortnightly echo what
        just some words
        0 9 * * * echo fine
    """))
    result = apsis("import-crontab", crontab, tmp_path / "out")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"wrote 1 job file to {tmp_path / 'out'}:",
        "  echo-fine.yaml  line 8: 0 9 * * * in UTC",
        "needs attention:",
        "  not imported: line 1: bad cron expression '61 * * * *': Bad minute",
        "  not imported: line 2: bad cron expression '0 9 * * echo': Bad day-of-week",
        "  not imported: line 3: CRON_TZ='Mars/Olympus' (line 3) is not a known time zone",
        "  not imported: line 4: not imported: CRON_TZ='Mars/Olympus' (line 3) is not a known time zone",
        "  not imported: line 6: unknown macro '@fortnightly' (known: @yearly, @annually, @monthly, "
        "@weekly, @daily, @midnight, @hourly, @reboot)",
        "  not imported: line 7: neither an entry nor NAME=value: just some words",
    ]


def test_usage_errors(tmp_path):
    err = apsis("import-crontab", tmp_path / "none", tmp_path / "out")
    assert (err.returncode, err.stderr) == (1, f"Error: cannot read {tmp_path / 'none'}: "
                                               "No such file or directory\n")
    (tmp_path / "c").write_text("0 9 * * * true\n")
    err = apsis("import-crontab", tmp_path / "c", tmp_path / "out", "--tz", "Nowhere/Land")
    assert (err.returncode, err.stderr) == (2, "Error: --tz: unknown time zone: 'Nowhere/Land'\n")


# --- the pieces ----------------------------------------------------------------

@pytest.mark.parametrize("text, command, stdin", [
    ("echo hi", "echo hi", None),
    ("date +\\%Y-\\%m-\\%d", "date +%Y-%m-%d", None),
    ("mail -s hi me%line one%line two", "mail -s hi me", "line one\nline two\n"),
    ("cat%a\\%b%", "cat", "a%b\n"),
    ("cat%", "cat", ""),
    ("cat%back\\slash", "cat", "back\\slash\n"),
    ("printf 'a\\nb'", "printf 'a\\nb'", None),
])
def test_split_percent_follows_crontab5(text, command, stdin):
    assert split_percent(text) == (command, stdin)


@pytest.mark.parametrize("command, name", [
    ("/usr/local/bin/backup.sh --full > /var/log/backup.log 2>&1", "backup"),
    ("cd /srv/app && ./manage.py clearsessions", "manage-clearsessions"),
    ("test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
     "run-parts-cron-daily"),
    ("python3 -m app.jobs.cleanup --days 7", "app-jobs-cleanup"),
    ("/usr/bin/php /var/www/artisan schedule:run >> /dev/null 2>&1", "artisan-schedule-run"),
    ("LANG=C nice -n 10 /opt/bin/report weekly", "report-weekly"),
    ("timeout 5m flock /tmp/sync.lock rsync -a /data/ backup:/data/", "rsync-data"),
    ("echo 'unbalanced", "echo-unbalanced"),
    (">&2 :", "job"),
])
def test_job_names_are_short_and_readable(command, name):
    assert job_name(command) == name


def test_unique_ids_number_repeats_in_file_order():
    assert unique_ids(["a", "b", "a", "a-2", "a"]) == ["a", "b", "a-2", "a-2-2", "a-3"]


def test_env_lines_apply_to_the_entries_after_them():
    tab = parse_crontab("0 1 * * * one\nA = 'x y '\nSHELL=/bin/zsh\n0 2 * * * two\nA=\n0 3 * * * three\n",
                        "UTC")
    assert [(e.command, e.env, e.shell) for e in tab.entries] == [
        ("one", {}, "/bin/sh"), ("two", {"A": "x y "}, "/bin/zsh"), ("three", {"A": ""}, "/bin/zsh")]
