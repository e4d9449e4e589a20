"""Running a command: the torch device and thread budget, how a run stops, exit statuses and
one-line errors, closed pipes, and the optional extras a command needs."""
