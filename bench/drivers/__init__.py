"""One driver per queue system, each a script that runs the shared workload and prints one JSON line."""
