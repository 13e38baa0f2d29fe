"""Records → metrics → comparison reports. Imports nothing else from this repository.

records.py    the per-request record schema (Parquet, one row per request)
manifest.py   run.json: what ran (cells, pods, load); load_run / write_run
loading.py    Parquet parts → numpy columns (read_columns) or a DataFrame (read_records)
hdr.py        HdrHistogram percentiles computed with numpy
metrics.py    compute_cell / compute_run: balance, connections, latency, errors, time series
summary.py    summary.json (schema 2, every field documented) and summary.md, the per-cell sentences
events.py     changes under load (time to fair share, a kill's failures …) and the request reconciliation
report.py     write_report: summary.json, summary.md and a self-contained report.html
compare.py    compare two summaries against thresholds: the nightly CI gate
synthetic.py  synthetic runs with known behaviour (demo report, benchmark, tests)
"""
