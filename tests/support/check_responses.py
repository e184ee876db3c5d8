"""Checks real API answers against the schemas /openapi.json gives for them.

Usage: check_responses.py OPENAPI.json ANSWERS.json, where ANSWERS is a list of
{"path": template, "method": m, "status": code, "content_type": t, "body": json}.
Each body is validated (JSON Schema 2020-12, as OpenAPI 3.1 schemas are) against
paths[path][method].responses[status].content[t].schema, with the document as
the root so its #/components references resolve. Exits 1 naming every mismatch.
"""
import json
import sys

from jsonschema import Draft202012Validator

doc = json.load(open(sys.argv[1]))
answers = json.load(open(sys.argv[2]))
failures = []
for a in answers:
    where = f'{a["method"].upper()} {a["path"]} {a["status"]} {a["content_type"]}'
    try:
        schema = doc["paths"][a["path"]][a["method"]]["responses"][str(a["status"])]["content"][a["content_type"]]["schema"]
    except KeyError as e:
        failures.append(f"{where}: not documented ({e})")
        continue
    root = dict(doc)
    root.update(schema)
    errors = sorted(Draft202012Validator(root).iter_errors(a["body"]), key=lambda e: list(e.absolute_path))
    for e in errors[:5]:
        failures.append(f"{where}: at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}")
print(f"{len(answers)} answers checked, {len(failures)} mismatches")
for f in failures:
    print(f)
sys.exit(1 if failures else 0)
