"""The reference's later rules (one-covenant/templar v2.1.28, January 2026) as pure functions.

`tracker`: each peer's memory those rules need (missing-file and negative-evaluation histories),
serialisable to and from the `ratings` audit rows so a restart rebuilds it. `penalties`: the rules
themselves, each returning the phrase `gauntlet explain` shows when it fires. `sync`: steps
behind as an interquartile mean over an EMA of each probed parameter's change.

Every rule is a setting of `RulesConfig` (gauntlet/config.py), off unless the `templar-2026`
preset (or an override) turns it on; `gauntlet.ratings.advance` calls them.
"""
