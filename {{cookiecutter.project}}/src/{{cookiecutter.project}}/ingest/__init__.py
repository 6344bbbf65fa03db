"""Ingest: events into the warehouse's raw log, from the synthetic generator or the Coveo file.

`synthetic` generates events with a known ground truth, `coveo` converts the real challenge file,
`rules` holds the row rules that quarantine bad rows, and `load` puts the events of either source
into the configured warehouse (`ingest`).
"""
