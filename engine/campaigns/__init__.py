"""Campaigns and audiences: schedules, the runs registry and the fan-out over owned profiles."""
