"""Episodes, the trajectory store, collection, NLD ingest and bursty sequences."""
