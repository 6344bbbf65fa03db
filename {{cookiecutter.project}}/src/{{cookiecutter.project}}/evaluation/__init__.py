"""Next-item evaluation: examples, metrics, behavioural probes, the RecList suite and the report.

The task is the challenge's: given a session prefix, rank the next item (MRR@K, HR@K, and F1@K
against all later items of the session; K is `schema.K`). Two protocols choose the prefixes:
every prefix of every test session (what the gate judges) and one random cut per session (the
challenge's test file); HR and MRR are reported under both. Behavioural tests probe what accuracy
hides: no padding or unknown SKUs in the lists, stable lists under harmless changes of the
session, and short sessions served at least as well as by the popularity list; the gate reads them
all. Metrics live here because RecList 2.1.0's own metric modules do not import; RecList runs the
suite and writes one `report.json` (plus charts) per model, and `report.evaluate` writes a
combined `report.json` beside them.

Modules, each importing only those before it: `protocol` (what a model offers, input checks),
`metrics`, `behaviour`, `suite` (RecList), `report`.
"""
