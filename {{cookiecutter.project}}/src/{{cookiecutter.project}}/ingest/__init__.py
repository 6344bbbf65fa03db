"""Ingest: events into the warehouse's raw log, from the generator, the Coveo file or the feed.

`synthetic` generates events with a known ground truth, `coveo` converts the real challenge file,
`landing` lists and reads the event feed's files in the same format under EVENTS_URI (a folder or
S3), `rules` holds the row rules that quarantine bad rows, and `load` puts the events of any source
into the configured warehouse (`ingest`).
"""
