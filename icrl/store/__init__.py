"""The trajectory store: the episode schema and append-only shards of compressed episodes plus an index.

``episode`` (the schema), ``codec`` (an episode as one record), ``journal`` (a writer's unsealed
frames), ``index`` (the per-shard fragments and the in-memory index), ``layout`` (files on disk,
sealing, recovery of dead writers), ``lock`` (one writing command at a time), ``writer``
(``ShardWriter``), ``reader`` (``TrajectoryStore``), ``source`` (the Grain data source), ``verify``,
``summary`` and ``repair`` (``icrl data verify | inspect | repair``).
"""
