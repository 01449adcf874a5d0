"""The vault's own pytest hooks for the vendored s3-tests (not upstream code).

- Tests marked ``skip`` in expectations.txt are skipped with their reason:
  they exercise something the vault gateway deliberately does not do.
- With ``S3TESTS_RESULTS`` set, one line per test is appended there as it
  finishes:
  ``NAME OUTCOME`` where OUTCOME is passed, failed or skipped (a failure in
  setup or teardown counts as failed), for tests/s3_tests.rs to check.
"""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def load_expectations(path=os.path.join(HERE, "expectations.txt")):
    """{test name: (status, reason)} from expectations.txt."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            status, name = parts[0], parts[1]
            reason = parts[2] if len(parts) > 2 else ""
            if status not in ("pass", "skip", "bug"):
                raise ValueError("expectations.txt: bad status %r" % status)
            if name in out:
                raise ValueError("expectations.txt: %s listed twice" % name)
            out[name] = (status, reason)
    return out


EXPECTATIONS = load_expectations()


def pytest_collection_modifyitems(config, items):
    for item in items:
        status, reason = EXPECTATIONS.get(item.name, (None, ""))
        if status == "skip":
            item.add_marker(pytest.mark.skip(reason="vault: " + reason))


_outcomes = {}


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::")[-1]
    prev = _outcomes.get(name)
    if report.failed:
        outcome = "failed"
    elif report.skipped:
        outcome = "skipped"
    else:
        outcome = "passed"
    # A phase's failure wins over anything; a skip wins over a pass.
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    if prev is None or rank[outcome] > rank[prev]:
        _outcomes[name] = outcome
    if report.when == "teardown":
        _write_result(name)


def _write_result(name):
    path = os.environ.get("S3TESTS_RESULTS")
    if path:
        # Appended test by test, so a run cut short still tells what ran.
        with open(path, "a", encoding="utf-8") as f:
            f.write("%s %s\n" % (name, _outcomes[name]))
