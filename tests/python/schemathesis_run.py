"""Schemathesis against a running gateway's /openapi.json.

Usage: schemathesis_run.py BASE_URL KEY REPORT_DIR [MAX_EXAMPLES]

Runs the schemathesis CLI (pinned in scripts/python-env.sh) over every
operation of the document with the test key, in positive and negative mode,
with the checks that hold for this API, then reads the JUnit report and
prints one line of figures: `schemathesis: operations=N cases=N failures=N
errors=N server_errors=N`. Exits non-zero when schemathesis found anything.
"""

import json
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "ignored_auth",
        "unsupported_method",
    ]
)


def main() -> int:
    base, key, report_dir = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    max_examples = sys.argv[4] if len(sys.argv) > 4 else "25"
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / "junit.xml"
    events = report_dir / "events.ndjson"
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base}/openapi.json",
        "--url",
        base,
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        CHECKS,
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        max_examples,
        "--seed",
        "20261128",
        # One worker: Python 3.11's ast.parse is not thread-safe, and
        # hypothesis calls it while describing strategies.
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report",
        "junit,ndjson",
        "--report-junit-path",
        str(junit),
        "--report-ndjson-path",
        str(events),
    ]
    run = subprocess.run(args, capture_output=True, text=True)
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)

    tree = ET.parse(junit)
    suites = tree.getroot()
    cases = suites.findall(".//testcase")
    failures = sum(len(c.findall("failure")) for c in cases)
    errors = sum(len(c.findall("error")) for c in cases)
    # Requests sent and 5xx answers, from the event stream.
    sent, server_errors = 0, 0
    for line in events.read_text().splitlines():
        for response in _responses(json.loads(line)):
            sent += 1
            if response >= 500:
                server_errors += 1
    print(
        f"schemathesis: operations={len(cases)} requests={sent} "
        f"failures={failures} errors={errors} server_errors={server_errors} "
        f"exit={run.returncode}"
    )
    return 0 if run.returncode == 0 and failures == errors == server_errors == 0 else 1


def _responses(value):
    """Status codes of every response recorded in an event, at any depth."""
    if isinstance(value, dict):
        response = value.get("response")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            yield response["status_code"]
        for child in value.values():
            yield from _responses(child)
    elif isinstance(value, list):
        for child in value:
            yield from _responses(child)


if __name__ == "__main__":
    sys.exit(main())
