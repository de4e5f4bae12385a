"""docs/extensions.md stays true: its examples register and its job files load with them."""

import re
import subprocess
import sys

from conftest import ROOT

DOC = ROOT / "docs" / "extensions.md"

CHECK = r'''
import sys, yaml
sys.path.insert(0, sys.argv[1])
import doc_ext  # registers every type of the document
from apsis_lite.model.jobs import job_from_jso
from apsis_lite.model.registry import PROGRAMS, SCHEDULES, CONDITIONS, ACTIONS
for name, reg in (("greet", PROGRAMS), ("count-lines", PROGRAMS), ("every-other-hour", SCHEDULES),
                  ("file-exists", CONDITIONS), ("append-json", ACTIONS)):
    assert name in reg, name
for i, text in enumerate(sys.argv[2:]):
    jso = yaml.safe_load(text)
    if not isinstance(jso, dict) or "program" not in jso:
        continue  # the config example
    job = job_from_jso(jso, f"example{i}")
    print("loaded", job.job_id)
'''


def test_every_example_registers_and_loads(tmp_path):
    text = DOC.read_text()
    python = re.findall(r"```python\n(.*?)```", text, re.S)
    yamls = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(python) == 5 and len(yamls) == 6
    (tmp_path / "doc_ext.py").write_text("\n\n".join(python))
    done = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path), *yamls], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("loaded") == 5, done.stdout
