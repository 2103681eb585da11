"""What runs in ``nova worker``: the RQ job functions, the app they run in, and the batch
tasks of a time series."""
