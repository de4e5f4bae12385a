"""The scheduler: plans slots, starts runs through the agent, collects them, recovers after restarts.

``core.Engine`` is the facade the service, the web side and the tests use;
it runs the pass and wires these collaborators, one concern each:

    catalog.JobCatalog           the jobs, their load errors, broken jobs
    planning.Planner             slots up to the horizon, catch-up
    folders_ahead.FoldersAhead   run folders written before the due time
    launching.Starter            due runs to waiting to starting, handed to programs
    waitlist.WaitingRuns         conditions, resources, waiting max_time
    collecting.Collector         notices, results, reconciling runs in flight
    stopping.Stopper             stops by hand and on stop schedules
    alarms.Alarms                deadlines and max_duration
    reruns.Reruns                automatic reruns
    reactions.Reactions          committed state changes, reacted to in the pass
    pauses.Pauses                the pauses in force
    recovery.Recovery            start-up and resync: memory read back
    operations.Operations        submit, start, skip, signal, rerun, mark
    inserver_runs.InServerRuns   in-server programs' runs: started, recorded, abandoned
    faults.RunGuard              a failure confined to its run

The pieces they build on: ``waiting`` (the wait index, resources, condition
checks), ``launcher`` (run folders and the agent client), ``inserver`` (the
worker threads of in-server programs), ``health`` (what the engine last did;
backoff), ``reload`` (watching the jobs folder). Beside the engine, not
wired into it: ``sanity`` (the sanity checker, its findings and their
actions; the service runs it) and ``sanity_checks`` (one check per kind of
finding).
"""
