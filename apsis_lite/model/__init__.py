"""The job model: job files and the types they are made of (schedules, calendars,
programs, conditions, actions), runs and their states. Pure values; no I/O but reading job files."""
