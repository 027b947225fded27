"""Property-based fuzzing of both listeners with schemathesis, driven by the server's own
OpenAPI documents (`GET /openapi.json`): every operation gets generated valid and invalid
requests, and each answer must not be a server error and must match the document (status
code, content type, body schema).

The server runs the real gemma model with a small context (so that a generation is short),
an admin's access token on the Control Plane and the admin's API key on the inference API,
limits raised so that the fuzzer is not refused with 429 for its pace. Fuzzing may change
the admin's own data (it creates keys, tickets, prices); the server is a throwaway.

Usage: python fuzz_api.py PATH/TO/tensormesh [MODEL] [--max-examples N]
Prints per listener the operations and cases schemathesis ran, and exits non-zero when any
check failed.
"""

import json
import os
import re
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from check_clients import KEY, start_server  # noqa: E402
from cli_parity import login_tokens  # noqa: E402

# What "break the schema" means here: every check that compares an answer with the
# document, and no 5xx. Not run: `positive_data_acceptance` (a request that fits the schema
# may still name a model or a ticket that does not exist: 404 is right) and the stateful
# checks that need links between operations, which the document does not declare.
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
])


def fuzz(name, base, token, model, max_examples, report_dir):
    """Runs schemathesis against one listener; returns (ok, operations, cases)."""
    report = os.path.join(report_dir, name)
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [os.path.join(os.path.dirname(sys.executable), "st"),
           "--config-file", os.path.join(here, "schemathesis.toml"), "run", f"{base}/openapi.json",
           "--checks", CHECKS, "--header", f"Authorization: Bearer {token}",
           "--max-examples", str(max_examples), "--workers", "2", "--request-timeout", "120",
           "--phases", "examples,coverage,fuzzing", "--generation-deterministic",
           "--report", "junit", "--report-dir", report, "--no-color"]
    print(f"== schemathesis: {name} listener ({base})", flush=True)
    env = dict(os.environ, CI="true", SCHEMATHESIS_HOOKS="fuzz_hooks", TM_FUZZ_MODEL=model,
               PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = done.stdout + done.stderr
    print(out[-12000:])
    operations = cases = None
    m = re.search(r"API Operations:\s+Selected: \d+/\d+\s+Tested: (\d+)", out)
    if m:
        operations = int(m.group(1))
    m = re.search(r"Test cases:\s+(\d+) generated", out)
    if m:
        cases = int(m.group(1))
    return done.returncode == 0, operations, cases


def generations_billed(control, token):
    """How many of the inference fuzzer's requests reached the engine and were billed."""
    req = urllib.request.Request(f"{control}/v1/billing/serverless-usage/history",
                                 headers={"Authorization": f"Bearer {token}"})
    rows = json.load(urllib.request.urlopen(req))["rows"]
    return sum(int(r["requestCount"]) for r in rows)


def main():
    binary = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else "gemma-3-270m"
    max_examples = int(sys.argv[sys.argv.index("--max-examples") + 1]) if "--max-examples" in sys.argv else 20
    limits_off = ["--control-requests-per-minute", "0", "--key-rpm", "0", "--key-tpm", "0", "--user-rpm", "0",
                  "--user-tpm", "0", "--user-concurrency", "0"]
    proc, base, control, data_dir = start_server(binary, model, None, ctx_size=128, extra_args=limits_off,
                                                 log_name="server.log")
    results = {}
    try:
        token = login_tokens(control)["access_token"]
        results["inference"] = fuzz("inference", base, KEY, model, max_examples, data_dir)
        served = generations_billed(control, token)
        results["control"] = fuzz("control", control, token, model, max_examples, data_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps({k: {"passed": ok, "operations": ops, "cases": cases}
                      for k, (ok, ops, cases) in results.items()}))
    print(f"generations served and billed while fuzzing the inference listener: {served}")
    if not all(ok for ok, _, _ in results.values()):
        print(f"server log: {data_dir}/server.log")
        sys.exit(1)


if __name__ == "__main__":
    main()
