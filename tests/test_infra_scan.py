"""The security scan of infra/: checkov (its Bicep framework) must report no failed check, and every check it
skips must be skipped in the template, on its resource, with a reason (``// checkov:skip=ID: reason``).

Checkov pins its own Bicep parser (pycep-parser 0.5.1, the tests use 0.7.1), so it lives in a venv of its own,
``.venv-checkov``, which ``make install`` creates; ``CHECKOV=/path/to/checkov`` points elsewhere. A missing
checkov fails these tests: the scan is part of ``make test``.

Checkov reads nothing inside a conditional resource (``resource x '...' = if (cond) {...}``): the fixes it cannot
see there (the conditional secrets' expiry and content type) are asserted here from the parsed template.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
TEMPLATES = sorted(INFRA.glob("*.bicep"))
_SKIP = re.compile(r"//\s*checkov:skip=(?P<id>[A-Z0-9_]+)(?::(?P<reason>.*))?$")
# Offline: no guideline download (Prisma Cloud API) and no PyPI version check; the scan itself needs no network.
_OFFLINE_ENV = {"BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE", "LOG_LEVEL": "WARNING"}


def _checkov() -> str:
    for candidate in (os.environ.get("CHECKOV"), ROOT / ".venv-checkov" / "bin" / "checkov", shutil.which("checkov")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("checkov is not installed: run `make install` (it creates .venv-checkov), or set CHECKOV")


def run_checkov(directory: Path, *extra: str) -> dict:
    """Checkov's JSON report for the Bicep files of ``directory`` (one report: the bicep framework only)."""
    done = subprocess.run([_checkov(), "-d", str(directory), "--framework", "bicep", "--skip-download",
                           "--output", "json", *extra], check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **_OFFLINE_ENV})
    assert done.stdout.strip(), f"checkov printed no report (exit {done.returncode}): {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report.get("check_type") == "bicep", report.get("check_type")
    return report


@cache
def report() -> dict:
    return run_checkov(INFRA)


def _skip_comments() -> list[tuple[str, int, str, str]]:
    """(file, line, check id, reason) of every checkov skip comment in infra/*.bicep."""
    found = []
    for path in TEMPLATES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = _SKIP.search(line.strip())
            if match:
                found.append((path.name, number, match["id"], (match["reason"] or "").strip()))
    return found


def test_checkov_scanned_every_template():
    """Every file parsed (a module checkov cannot parse is a parsing error, not a silent pass) and counted:
    checkov's resource count covers the resources of all the templates (it counts more: nested and modules')."""
    summary = report()["summary"]
    assert summary["parsing_errors"] == 0
    ours = 0
    for path in TEMPLATES:
        parsed = BicepParser().parse(file_path=path)
        ours += len(parsed["resources"])
    assert summary["resource_count"] >= ours, (summary, ours)
    scanned = {Path(c["file_path"]).name for kind in ("passed_checks", "failed_checks", "skipped_checks")
               for c in report()["results"][kind]}
    assert "main.bicep" in scanned
    assert summary["passed"] >= 25  # the scan ran its checks, not nothing


def test_checkov_reports_no_failed_check():
    failed = [f"{c['check_id']} {c['resource']} ({Path(c['file_path']).name}:{c['file_line_range'][0]}): "
              f"{c['check_name']}" for c in report()["results"]["failed_checks"]]
    assert not failed, "checkov failed checks - fix them, or skip them on the resource with a reason:\n" + \
        "\n".join(failed)


def test_every_skip_carries_a_reason_a_reviewer_can_read():
    comments = _skip_comments()
    assert comments, "no checkov skip comment found: the scan of the skips below would be empty"
    unexplained = [f"{f}:{n} {cid}" for f, n, cid, reason in comments if len(reason.split()) < 6]
    assert not unexplained, f"checkov skips without a real reason (a sentence, at least 6 words): {unexplained}"
    for check in report()["results"]["skipped_checks"]:
        assert (check.get("check_result") or {}).get("suppress_comment", "").strip(), check["check_id"]


def test_every_skip_comment_is_used():
    """A skip that checkov does not apply (a check that passes anyway, a typo in the id, a comment outside its
    resource block) would only hide a future failure: each must show up in the report's skipped checks."""
    skipped = {(Path(c["file_path"]).name, c["check_id"], line)
               for c in report()["results"]["skipped_checks"]
               for line in range(c["file_line_range"][0], c["file_line_range"][1] + 1)}
    unused = [f"{f}:{n} {cid}" for f, n, cid, _ in _skip_comments() if (f, cid, n) not in skipped]
    assert not unused, f"checkov skip comments that skip nothing (remove them, or move them into the resource): {unused}"


def test_the_fixes_checkov_cannot_see_in_conditional_resources():
    """The secrets created only in some configurations carry the expiry and content type too."""
    template = BicepParser().parse(file_path=INFRA / "main.bicep")
    secrets = {n: r for n, r in template["resources"].items() if r["type"] == "Microsoft.KeyVault/vaults/secrets"}
    assert len(secrets) >= 5
    for name, resource in secrets.items():
        config = resource["config"]
        body = config["config"] if "condition" in config else config
        assert body["properties"].get("contentType"), f"secret {name} has no contentType"
        assert body["properties"].get("attributes", {}).get("exp"), f"secret {name} has no expiry (attributes.exp)"


def test_removing_a_fix_fails_the_scan(tmp_path):
    """The scan is sensitive: the template without HTTP/2 and without purge protection fails those checks."""
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    for fix in ("      http20Enabled: true\n", "    enablePurgeProtection: true\n"):
        assert text.count(fix) == 1, f"the fix {fix.strip()!r} is not in main.bicep"
        text = text.replace(fix, "")
    for path in TEMPLATES:
        (tmp_path / path.name).write_text(text if path.name == "main.bicep" else path.read_text(encoding="utf-8"))
    broken = run_checkov(tmp_path, "--check", "CKV_AZURE_18,CKV_AZURE_67,CKV_AZURE_110,CKV_AZURE_42")
    failed = {c["check_id"] for c in broken["results"]["failed_checks"]}
    assert {"CKV_AZURE_18", "CKV_AZURE_67", "CKV_AZURE_110", "CKV_AZURE_42"} <= failed
