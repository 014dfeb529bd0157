"""PG→PG benchmark of cdc-sync: backlog drain, live lag, one huge transaction (issue #2).

Run from the repository root: ``python -m bench [--mode drain|live|bigtx|all] [--scale 0.1]``.
"""
