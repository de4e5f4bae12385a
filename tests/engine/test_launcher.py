"""Run folders: recycling into spares, through the real launcher on a real folder."""

import logging

from apsis_lite.config import load_config
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.model.programs import parse_program
from apsis_lite.model.runs import Run


def test_a_run_whose_earlier_folder_is_still_a_spare_is_recycled_too(tmp_path, caplog):
    # A restart retires the folders written ahead for runs not yet due: run
    # 5's becomes the spare "r5". If run 5 then gets another spare ("r9"
    # sorts last, so it is taken first), its folder must still become a spare
    # when the run is over, not be deleted with a warning.
    config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(tmp_path / "jobs"))
    launcher = LocalLauncher(config)
    program = parse_program("true")
    try:
        for run_id in (5, 9):
            launcher.prepare(Run(run_id, "job", {}, "scheduled", 0.0), program, ahead=True)
        for run_id in (5, 9):
            launcher.remove(run_id)  # Retired at a restart.
        spares = tmp_path / "data" / "runs" / ".spare"
        assert sorted(p.name for p in spares.iterdir()) == ["r5", "r9"]

        assert launcher.prepare(Run(5, "job", {}, "starting", 0.0), program).endswith("r5")
        assert sorted(p.name for p in spares.iterdir()) == ["r5"]  # It took r9.
        with caplog.at_level(logging.WARNING, logger="apsis_lite.engine"):
            launcher.remove(5)
        assert caplog.records == []
        assert not (tmp_path / "data" / "runs" / "r5").exists()
        names = sorted(p.name for p in spares.iterdir())
        assert len(names) == 2 and names[0] == "r5"
        assert sorted(p.name for p in (spares / names[1]).iterdir()) == sorted(
            p.name for p in (spares / "r5").iterdir())

        # Both are taken again, each by a run of its own.
        assert launcher.prepare(Run(10, "job", {}, "starting", 0.0), program)
        assert launcher.prepare(Run(11, "job", {}, "starting", 0.0), program)
        assert list(spares.iterdir()) == []
    finally:
        launcher.close()
