"""The job model: job files and the types they are made of (schedules, calendars,
programs, conditions, actions), runs and their states, the template sandbox and
the type registries. Values and parsing; the only I/O is reading job and
calendar files, and what an action type does when the engine's action runner
performs it."""
