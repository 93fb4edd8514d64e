"""fairpool.scheduler: the scheduler daemon (pure SchedulerState, trio shell, journal, http)."""
