"""The scheduler: plans slots, starts runs through the agent, collects them, recovers after restarts."""
