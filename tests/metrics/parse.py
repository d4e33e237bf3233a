"""Reads Prometheus text from stdin with the official parser (prometheus-client, from PyPI)
and prints every sample as one JSON line: {"name", "labels", "value"}. A scrape this parser
refuses fails the test (tests/operator.rs)."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value}))
