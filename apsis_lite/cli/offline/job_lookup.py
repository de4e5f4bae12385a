"""Finding one job in a jobs folder by id, reading only its file; else naming close matches."""

from __future__ import annotations

import difflib
import os

from apsis_lite.errors import ApsisError
from apsis_lite.model.jobs import JOB_FILE_SUFFIXES, Job, load_job_file


class UnknownJob(ApsisError):
    status = 404


def job_ids(root: str) -> list[str]:
    """Every job id under ``root``, as the loader names them (hidden names skipped, links to folders not followed)."""
    ids = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        for name in files:
            if name.startswith(".") or not name.endswith(JOB_FILE_SUFFIXES):
                continue
            path = name if rel == "." else os.path.join(rel, name)
            ids.append(os.path.splitext(path)[0].replace(os.sep, "/"))
    return sorted(set(ids))


def close_matches(word: str, candidates, n: int = 3) -> list[str]:
    """Candidates like ``word``: the best spellings (a close second too), then those containing it."""
    scored = []
    for c in candidates:
        m = difflib.SequenceMatcher(None, word, c)
        if m.real_quick_ratio() >= 0.6 and m.quick_ratio() >= 0.6 and m.ratio() >= 0.6:
            scored.append((m.ratio(), c))
    scored.sort(key=lambda rc: (-rc[0], rc[1]))
    found = [c for r, c in scored if r >= scored[0][0] - 0.05]
    low = word.lower()
    found += [c for c in candidates if low in c.lower() and c not in found]
    return found[:n]


def find_job(root: str, job_id: str, **load_options) -> Job:
    """The job ``job_id`` in the folder ``root``.

    Reads only that job's file (``load_options`` go to ``load_job_file``).
    UnknownJob names close matches; a file that does not load raises
    JobErrors with every problem in it.
    """
    parts = job_id.split("/")
    if job_id and not any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        for suffix in JOB_FILE_SUFFIXES:
            path = os.path.join(root, *parts) + suffix
            if os.path.isfile(path):
                return load_job_file(path, job_id, **load_options)
    msg = f"no job {job_id!r} in {root}"
    close = close_matches(job_id, job_ids(root))
    if close:
        msg += f" (did you mean {', '.join(map(repr, close))}?)"
    raise UnknownJob(msg)
