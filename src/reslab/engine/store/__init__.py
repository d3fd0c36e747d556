"""The run directory on disk: its files and lock (rundir), checkpoints, reading a run back (runs), resume."""
