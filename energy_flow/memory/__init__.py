"""Memory: what a config will need before anything is allocated (estimate), what autograd keeps
for backward (saved), and what is live through a call (timeline)."""
