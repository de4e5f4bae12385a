"""apsis's parameters of its runs list, as terms of the run filter: scripts written for apsis send them.

``job_id=ID`` is the job with exactly that id; else, as apsis matches it,
the one job of whose id every word of ID begins a word (400 when several
do); else runs with exactly that job id (of a job since removed).
``state=S`` is the term ``state:S``. Any other ``NAME=VALUE`` is the term
``NAME=VALUE``: the arg NAME equals VALUE. A bare NAME must be a param of
some job or an arg of some stored run, so that a mistyped parameter is
refused rather than taken for a filter that matches nothing; ``_NAME=VALUE``
always means the arg NAME (apsis's way to an arg named like a parameter).
"""

import re

from apsis_lite.errors import BadRequest
from apsis_lite.store.runfilter import Term
from apsis_lite.web.api.description import query_parameters, unknown_parameters_error
from apsis_lite.web.request_args import shown

_NOT_WORD = re.compile(r"[^A-Za-z0-9]")
CHOICES_SHOWN = 8


def shorthand_terms(args, engine, store) -> list[Term]:
    """The filter terms the apsis-style parameters among ``args`` (a request's query) stand for."""
    names, _ = query_parameters("/runs", "get")
    terms, unknown = [], []
    for name, value in args.items(multi=True):
        raw = f"{name}={value}"
        if name == "job_id":
            terms.append(Term(raw, "job", match_job_id(value, engine.jobs)))
        elif name == "state":
            terms.append(Term(raw, "state", value))
        elif name in names:
            continue
        elif name.startswith("_") and len(name) > 1:
            terms.append(Term(raw, "arg", value, name=name[1:]))
        elif is_arg_name(name, engine, store):
            terms.append(Term(raw, "arg", value, name=name))
        else:
            unknown.append(name)
    if unknown:
        raise unknown_parameters_error(
            unknown, names, "GET /api/v1/runs",
            "; or NAME=VALUE for an arg some job or stored run has, _NAME=VALUE for any arg")
    return terms


def is_arg_name(name, engine, store) -> bool:
    """Whether some job of the folder has a param ``name``, or some stored run an arg."""
    return any(name in job.params for job in engine.jobs.values()) or store.has_arg(name)


def match_job_id(text, jobs) -> str:
    """The job id ``job_id=text`` names, as apsis matches it (see the module's docstring)."""
    if not text:
        raise BadRequest("job_id: empty")
    if text in jobs:
        return text
    wanted = set(_NOT_WORD.split(text))
    matches = sorted(job_id for job_id in jobs
                     if all(any(word.startswith(w) for word in _NOT_WORD.split(job_id)) for w in wanted))
    if len(matches) > 1:
        listed = ", ".join(matches[:CHOICES_SHOWN]) + (", ..." if len(matches) > CHOICES_SHOWN else "")
        raise BadRequest(f"job_id: {shown(text)} matches {len(matches)} jobs ({listed}); give the whole id")
    return matches[0] if matches else text
