"""Parity of our `tm` (Rust) with the official `tm` 0.2.1: both run the same commands
against the same running `tensormesh serve`, with the same config home, and must agree on
exit code and stdout (JSON compared as data; only values that legitimately differ between
two runs are normalised).

Usage: python cli_parity.py PATH/TO/tensormesh PATH/TO/our/tm [MODEL]
"""

import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import completion_parity  # noqa: E402
from check_clients import ADMIN_EMAIL, ADMIN_PASSWORD, KEY, check, report, start_server  # noqa: E402

OFFICIAL = os.path.join(os.path.dirname(sys.executable), "tm")


def run(binary, args, home, env_extra=None, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORMESH_")}
    env.update(TM_CONFIG_HOME=home, **(env_extra or {}))
    extra = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    out = subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=120, **extra)
    return out.returncode, out.stdout, out.stderr


def same(ours_bin, args, home, env_extra=None, as_json=True, normalise=None, stdin=None):
    theirs = run(OFFICIAL, args, home, env_extra, stdin)
    ours = run(ours_bin, args, home, env_extra, stdin)
    assert theirs[0] == ours[0], f"exit codes differ: official {theirs[0]} ({theirs[2]!r}), ours {ours[0]} ({ours[2]!r})"
    if as_json and theirs[0] == 0:
        a, b = json.loads(theirs[1]), json.loads(ours[1])
        if normalise:
            a, b = normalise(a), normalise(b)
        assert a == b, f"stdout differs:\nofficial {json.dumps(a, indent=1)}\nours     {json.dumps(b, indent=1)}"
    elif theirs[0] == 0:
        assert theirs[1] == ours[1], f"stdout differs:\nofficial {theirs[1]!r}\nours     {ours[1]!r}"
    return ours


def shape(v):
    """What a response looks like without its values (for commands that create things)."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v[:1]]
    return type(v).__name__


def json_error_text(v):
    """A status object with the parser's wording of an invalid auth.json cut off."""
    cut = lambda t: t.split("auth.json: ")[0] if isinstance(t, str) else t
    v = json.loads(json.dumps(v))
    v["warnings"] = [cut(w) for w in v.get("warnings", [])]
    if "control_plane" in v:
        v["control_plane"]["error"] = cut(v["control_plane"].get("error"))
    return v


def approve_link(control, auth_url):
    """Posts the sign-in page's approve form: the link's request and code, the credentials,
    and the ticked "my terminal shows this code" box."""
    link = urllib.parse.parse_qs(urllib.parse.urlparse(auth_url).query)
    form = urllib.parse.urlencode({"request": link["request"][0], "code": link["code"][0], "email": ADMIN_EMAIL,
                                   "password": ADMIN_PASSWORD, "confirm": "yes", "action": "approve"}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{control}/auth/cli/login", data=form))


def login_tokens(control):
    """The browser flow over HTTP (the sign-in form posted directly)."""
    start = json.load(urllib.request.urlopen(urllib.request.Request(f"{control}/auth/cli/start", method="POST")))
    approve_link(control, start["auth_url"])
    body = json.dumps({"cli_code": start["cli_code"]}).encode()
    req = urllib.request.Request(f"{control}/auth/cli/exchange", data=body,
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))


def main():
    server_bin, ours = sys.argv[1], os.path.abspath(sys.argv[2])
    model = sys.argv[3] if len(sys.argv) > 3 else "gemma-3-270m"
    proc, base, control, data_dir = start_server(server_bin, model, None)
    try:
        checks(ours, base, control, model, server_bin, data_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report()


def checks(ours, base, control, model, server_bin, data_dir):
    cp = ["--controlplane-base", control]
    empty = tempfile.mkdtemp(prefix="tm-parity-empty-")
    home = tempfile.mkdtemp(prefix="tm-parity-home-")

    @check("parity: --version, version --output raw, completion bash/zsh/fish")
    def _():
        same(ours, ["--version"], empty, as_json=False)
        same(ours, ["--output", "raw", "version"], empty, as_json=False)
        for shell in ("bash", "zsh", "fish", "ZSH"):
            same(ours, ["completion", shell], empty, as_json=False)

    @check("parity: usage errors (no subcommand, unknown command, option after the subcommand)")
    def _():
        same(ours, [], empty, as_json=False)
        same(ours, ["auth"], empty, as_json=False)
        same(ours, ["nonsense"], empty, as_json=False)
        same(ours, ["auth", "status", "--output", "json"], empty, as_json=False)

    @check("parity: config init (writes 0600, refuses a second time), config show [--sources]")
    def _():
        theirs_home, our_home = tempfile.mkdtemp(), tempfile.mkdtemp()
        for binary, h in ((OFFICIAL, theirs_home), (ours, our_home)):
            rc, out, err = run(binary, ["config", "init"], h)
            assert rc == 0 and out.strip() == os.path.join(h, "config.toml"), (binary, rc, out, err)
            assert os.stat(os.path.join(h, "config.toml")).st_mode & 0o777 == 0o600
            assert run(binary, ["config", "init"], h)[0] == 1
        # Each reads the file the other wrote.
        for h in (theirs_home, our_home):
            same(ours, ["--output", "json", "config", "show"], h, normalise=lambda v: v)
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write('controlplane_base = "http://example.invalid"\ntimeout_seconds = 12\nmax_retries = 1\n'
                    '[overrides]\ngateway_api_key = "overrideabcdefghij"\n'
                    '[managed]\ngateway_provider = "lambda"\ngateway_user_id = "U1"\n')
        same(ours, ["--output", "json", "config", "show", "--sources"], home)
        same(ours, ["--output", "json", "config", "show", "--sources"], home, {"TENSORMESH_TIMEOUT_SECONDS": "7"})
        same(ours, ["--output", "json", "--timeout", "5", "config", "show", "--sources"], home,
             {"TENSORMESH_TIMEOUT_SECONDS": "7"})
        same(ours, ["--output", "table", "config", "show"], home, as_json=False)
        same(ours, ["--output", "yaml", "config", "show"], home, as_json=False)
        os.remove(os.path.join(home, "config.toml"))

    @check("parity: infer doctor (local readiness) in text and json, --exit-status")
    def _():
        for args in ([], ["--model", "m1"], ["--model", "m1", "--api-key", "secret-key-123"],
                     ["--base-url", "http://127.0.0.1:1/", "--model", "m"]):
            for fmt in ("text", "json", "table"):
                same(ours, ["--output", fmt, "infer", "doctor"] + args, empty, as_json=fmt == "json")
            same(ours, ["infer", "doctor", "--exit-status"] + args, empty, as_json=False)

    @check("parity: Control Plane commands without a token exit 2")
    def _():
        for args in (["billing", "balance"], ["auth", "whoami"], ["billing", "pricing", "serverless", "list"],
                     ["tickets", "list"], ["products", "list"], ["reserved-deployments", "submit"],
                     ["activities", "get", ""], ["metrics", "user"], ["billing", "address", "get"],
                     ["billing", "stripe", "customer", "get"], ["admin", "products", "list"]):
            same(ours, cp + args, empty, as_json=False)
        same(ours, ["auth", "print-token", "--yes-i-know"], empty, as_json=False)

    tokens = login_tokens(control)
    with open(os.path.join(home, "auth.json"), "w") as f:
        json.dump(tokens, f)

    @check("parity: auth status / print-token / whoami")
    def _():
        same(ours, ["--output", "json"] + cp + ["auth", "status"], home)
        same(ours, cp + ["auth", "status"], home, as_json=False)
        same(ours, cp + ["auth", "status", "--exit-status"], home, as_json=False)
        same(ours, ["auth", "print-token"], home, as_json=False)
        same(ours, ["auth", "print-token", "--yes-i-know"], home, as_json=False)
        same(ours, ["--output", "json"] + cp + ["auth", "whoami"], home)
        same(ours, cp + ["auth", "whoami"], home, as_json=False)
        same(ours, ["--output", "yaml"] + cp + ["auth", "status"], home, as_json=False)

    @check("parity: billing balance / transactions / spending / pricing, in every format")
    def _():
        for args in (["billing", "balance"], ["billing", "transactions", "list"],
                     ["billing", "transactions", "list", "--page-size", "1"],
                     ["billing", "spending", "summary"], ["billing", "spending", "history"],
                     ["billing", "pricing", "serverless", "list", "--active-only"],
                     ["billing", "pricing", "serverless", "list", "--model", model]):
            same(ours, ["--output", "json"] + cp + args, home)
            for fmt in ("raw", "table", "text", "yaml"):
                same(ours, ["--output", fmt] + cp + args, home, as_json=False)

    infer = ["--base-url", base, "--api-key", KEY]

    @check("parity: infer models / health / version / tokenize / detokenize")
    def _():
        def created(v):
            for m in v.get("data", []):
                m.pop("created", None)
            return v
        same(ours, ["--output", "json", "infer", "models"] + infer, home, normalise=created)
        same(ours, ["infer", "tokenize", "--model", model, "--json", '{"prompt": "Hello"}'] + infer, home,
             as_json=False)
        same(ours, ["infer", "health"] + infer, home, as_json=False)
        same(ours, ["infer", "version"] + infer, home, as_json=False)
        same(ours, ["--output", "json", "infer", "tokenize", "--model", model, "--json", '{"prompt": "Hello"}']
             + infer, home)
        same(ours, ["infer", "detokenize", "--model", model, "--json", '{"tokens": [9259, 1902]}'] + infer, home,
             as_json=False)

    @check("parity: infer chat / responses / completions (greedy, same text), --stream, missing key or model")
    def _():
        request = json.dumps({"messages": [{"role": "user", "content": "Name a colour."}], "temperature": 0,
                              "max_tokens": 8})
        answer = json.dumps({"input": "Name a fruit.", "temperature": 0, "max_output_tokens": 8})
        prompt = json.dumps({"prompt": "The sky is", "temperature": 0, "max_tokens": 6})
        # Each request once first, so that both CLIs are answered from the same cached prefix:
        # a prompt computed fresh and one whose prefix is reused can round differently, and a
        # near-tie then flips a greedy token (docs/engine.md, "Prefix cache").
        for route, body in (("chat", request), ("responses", answer), ("completions", prompt)):
            run(ours, ["infer", route, "--model", model, "--json", body] + infer, home)
        same(ours, ["infer", "chat", "--model", model, "--json", request] + infer, home, as_json=False)
        same(ours, ["infer", "chat", "--model", model, "--stream", "--json", request] + infer, home, as_json=False)
        same(ours, ["infer", "responses", "--model", model, "--json", answer] + infer, home, as_json=False)
        same(ours, ["infer", "responses", "--model", model, "--stream", "--json", answer] + infer, home,
             as_json=False)
        same(ours, ["infer", "completions", "--model", model, "--json", prompt] + infer, home, as_json=False)
        same(ours, ["infer", "completions", "--model", model, "--stream", "--json", prompt] + infer, home,
             as_json=False)
        same(ours, ["infer", "chat", "--model", model, "--json", request, "--base-url", base], home, as_json=False)
        same(ours, ["infer", "chat", "--json", '[{"role":"user","content":"hi"}]'] + infer, home, as_json=False)
        same(ours, ["infer", "chat", "--model", model, "--json", "[1,"] + infer, home, as_json=False)
        same(ours, ["infer", "chat", "--model", model] + infer, home, as_json=False,
             stdin='{"messages": [{"role": "user", "content": "Say hi."}], "temperature": 0, "max_tokens": 8}')

    @check("parity: tm cost (window, month, range; json, text, table, raw) and its usage errors")
    def _():
        import datetime
        import time
        # The usage window ends at "now" in whole seconds: let the last request's record age
        # past it, or the two CLIs (run a moment apart) see different windows.
        time.sleep(1.5)
        month = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")
        for view in ([], ["--window", "7d"], ["--window", "24H"], ["--month", month], ["--month", "2020-01"],
                     ["--start", "2020-01-01"], ["--start", "2020-01-01T00:00:00Z", "--end", "2099-01-01"]):
            for fmt in ("text", "json", "table", "raw"):
                if fmt == "json":
                    same(ours, ["--output", fmt] + cp + ["cost"] + view, home,
                         normalise=lambda v: {**v, "end": None} if v.get("view") == "range" else v)
                elif view[:1] != ["--start"] or fmt == "table":  # text and raw print `end`, which is "now"
                    same(ours, ["--output", fmt] + cp + ["cost"] + view, home, as_json=False)
        report = json.loads(run(ours, ["--output", "json"] + cp + ["cost"], home)[1])
        assert any(int(m["cached_tokens"]) > 0 for m in report["per_model"]), report
        for bad in (["--window", "7d", "--month", month], ["--month", "2026/05"], ["--start", "yesterday"],
                    ["--month", month, "--end", "2026-01-01"]):
            same(ours, cp + ["cost"] + bad, home, as_json=False)

    @check("parity: users (api-keys list/create/delete, update, accept-tos) and refusals")
    def _():
        me = json.loads(run(ours, ["--output", "json"] + cp + ["auth", "whoami"], home)[1])["user"]["id"]
        js = ["--output", "json"] + cp
        same(ours, js + ["users", "api-keys", "list", "--include-deleted"], home)
        same(ours, js + ["users", "api-keys", "create", "--user-id", me, "--name", "p", "--scope", "a", "--yes"], home,
             normalise=shape)
        same(ours, js + ["users", "api-keys", "create", "--user-id", me], home, as_json=False)  # Aborted! (exit 1)
        same(ours, js + ["users", "api-keys", "create", "--yes"], home, as_json=False)  # no user id (exit 2)
        keys = [k["id"] for k in json.loads(run(ours, js + ["users", "api-keys", "list"], home)[1])["apiKeys"]]
        assert len(keys) >= 3, keys
        theirs = run(OFFICIAL, js + ["users", "api-keys", "delete", "--api-key", keys[-1], "--yes"], home)
        mine = run(ours, js + ["users", "api-keys", "delete", "--api-key", keys[-2], "--yes"], home)
        assert theirs[0] == mine[0] == 0 and json.loads(theirs[1]) == json.loads(mine[1]), (theirs, mine)
        same(ours, js + ["users", "api-keys", "delete", "--yes"], home, as_json=False)
        same(ours, js + ["users", "update", me, "--company", "Parity Inc"], home,
             normalise=lambda v: {**v, "user": {**v.get("user", {}), "updatedAt": None}} if "user" in v else v)
        same(ours, js + ["users", "update", me], home, as_json=False)
        same(ours, js + ["users", "update", me, "--json", '{"displayName": "P"}'], home, normalise=shape)
        same(ours, js + ["users", "accept-tos"], home, normalise=shape)

    @check("parity: admin users, balances, spending, serverless prices")
    def _():
        js = ["--output", "json"] + cp
        made = subprocess.run([server_bin, "user", "--data-dir", data_dir, "create", "--email", "parity@example.com",
                               "--password", "parity-password-1"], capture_output=True, text=True, check=True)
        target = made.stdout.split("(")[1].split(",")[0]
        same(ours, js + ["admin", "users", "list"], home)
        same(ours, cp + ["admin", "users", "list"], home, as_json=False)
        same(ours, js + ["admin", "users", "change-role", "--target-user-id", target, "--target-user-role",
                         "USER_ROLE_ADMIN", "--yes"], home, normalise=lambda v: {**v, "user": {**v["user"], "updatedAt": None}})
        same(ours, js + ["admin", "billing", "balances", "get", "--target-user-id", target], home)
        same(ours, js + ["admin", "billing", "balances", "add", "--target-user-id", target, "--amount", "1.5", "--yes"],
             home, normalise=shape)
        same(ours, js + ["admin", "billing", "balances", "add", "--target-user-id", target], home, as_json=False)
        same(ours, js + ["admin", "billing", "balances", "add", "--amount", "1", "--yes"], home, as_json=False)
        same(ours, js + ["admin", "billing", "balances", "get", "--target-user-id", target], home)
        same(ours, js + ["admin", "billing", "spending", "summary", "--target-user-id", target], home)
        same(ours, js + ["admin", "billing", "pricing", "serverless", "list", "--active-only"], home)
        price = '{"model": "parity/m", "name": "P", "inputTokenPrice": {"units": "1"}, "outputTokenPrice": {"units": "2"}}'
        same(ours, js + ["admin", "billing", "pricing", "serverless", "upsert", "--yes", "--json", price], home,
             normalise=shape)
        rows = json.loads(run(ours, js + ["admin", "billing", "pricing", "serverless", "list", "--model", "parity/m"],
                              home)[1])["pricing"]
        assert len(rows) == 2, rows
        for binary, row in ((OFFICIAL, rows[0]), (ours, rows[1])):
            rc, out, err = run(binary, js + ["admin", "billing", "pricing", "serverless", "delete", "--id", row["id"],
                                             "--yes"], home)
            assert (rc, json.loads(out)) == (0, {"empty": {}}), (binary, rc, out, err)
        same(ours, js + ["admin", "billing", "pricing", "serverless", "delete", "--id", "x"], home, as_json=False)

    @check("parity: tickets (create, list, get, message, close) and their usage errors")
    def _():
        js = ["--output", "json"] + cp
        for args in (["tickets", "create"], ["tickets", "message", "t1"], ["tickets", "message", "t1", "--json", "[]"],
                     ["tickets", "get", " "], ["tickets", "close", "t1"], ["tickets", "list", "--page", "x"]):
            same(ours, js + args, home, as_json=False)
        same(ours, js + ["tickets", "create", "--subject", "Parity", "--message", "Hello", "--type", "technical"], home,
             normalise=shape)
        same(ours, js + ["tickets", "list"], home)
        same(ours, js + ["tickets", "list", "--status", "TICKET_STATUS_OPEN", "--page", "2", "--size", "1"], home)
        for fmt in ("text", "yaml", "raw", "table"):
            same(ours, ["--output", fmt] + cp + ["tickets", "list"], home, as_json=False)
        tid = json.loads(run(ours, js + ["tickets", "list"], home)[1])["tickets"][0]["ticketId"]
        same(ours, js + ["tickets", "get", tid], home)
        same(ours, js + ["tickets", "get", "no-such-ticket"], home, as_json=False)
        same(ours, js + ["tickets", "message", tid, "--message", "more"], home, normalise=shape)
        same(ours, js + ["tickets", "message", tid, "--json", '{"message": "as json"}'], home, normalise=shape)
        conv = json.loads(run(ours, js + ["tickets", "get", tid], home)[1])["ticket"]["conversations"]
        assert [m["content"] for m in conv] == ["Hello", "more", "more", "as json", "as json"], conv
        same(ours, js + ["tickets", "close", tid, "--yes"], home)  # the second close changes nothing
        same(ours, js + ["tickets", "message", tid, "--message", "late"], home, as_json=False)

    @check("parity: reserved-deployments, activities, metrics user, products, billing address, stripe")
    def _():
        js = ["--output", "json"] + cp
        same(ours, js + ["reserved-deployments", "submit", "--company", "P", "--preferred-gpu", "GPU_TYPE_H100"], home,
             normalise=shape)
        same(ours, js + ["reserved-deployments", "submit"], home, as_json=False)
        same(ours, js + ["activities", "list"], home)
        same(ours, js + ["activities", "list", "--resource-type", "ticket", "--page", "2", "--size", "2"], home)
        same(ours, cp + ["activities", "list", "--action", "ticket.closed"], home, as_json=False)
        aid = json.loads(run(ours, js + ["activities", "list"], home)[1])["activities"][0]["activityId"]
        same(ours, js + ["activities", "get", aid], home)
        same(ours, js + ["activities", "get", "nope"], home, as_json=False)
        same(ours, js + ["metrics", "user", "--start-time", "2020-01-01T00:00:00Z", "--end-time",
                         "2020-01-02T00:00:00Z", "--step-seconds", "21600"], home)
        for args in (["--step-seconds", "0"], ["--step-seconds", "x"]):
            same(ours, js + ["metrics", "user"] + args, home, as_json=False)

        same(ours, js + ["admin", "products", "upsert", "--name", "Parity GPU", "--required-gpu-num", "2", "--family",
                         "f", "--spec-json", '{"a": 1}', "--inactive", "--yes"], home, normalise=shape)
        same(ours, js + ["admin", "products", "upsert", "--yes", "--json", '{"name": "Raw"}'], home, normalise=shape)
        same(ours, js + ["products", "list"], home)
        same(ours, js + ["admin", "products", "list"], home)
        for args in (["upsert", "--yes"], ["upsert", "--yes", "--json", '{"product": {}}'], ["delete", "x"],
                     ["delete", "no-such-product", "--yes"]):
            same(ours, js + ["admin", "products"] + args, home, as_json=False)
        ids = [p["id"] for p in json.loads(run(ours, js + ["admin", "products", "list"], home)[1])["products"]]
        assert len(ids) == 4, ids
        for binary, pid in ((OFFICIAL, ids[0]), (ours, ids[1])):
            rc, out, err = run(binary, js + ["admin", "products", "delete", pid, "--yes"], home)
            assert (rc, json.loads(out)) == (0, {"deleted": True}), (binary, rc, out, err)

        same(ours, js + ["billing", "address", "get"], home)
        same(ours, js + ["billing", "address", "update", "--json", '{"address": {"city": "Paris", "country": "FR"}}'],
             home)
        same(ours, js + ["billing", "address", "get"], home)
        for args in ([], ["--json", "{}"], ["--json", "[]"], ["--json", '{"address": 5}']):
            same(ours, js + ["billing", "address", "update"] + args, home, as_json=False)
        stripe = ["billing", "stripe"]
        for args in (["customer", "get"], ["payment-methods", "list"],
                     ["payment-methods", "attach", "--stripe-payment-method-id", "pm_1"], ["payment-methods", "attach"],
                     ["payment-methods", "detach", "--stripe-payment-method-id", "pm_1"], ["payment-methods", "detach"],
                     ["payment-intents", "create", "--json", '{"amount": 10.5}'], ["payment-intents", "create"],
                     ["payment-intents", "create", "--json", "{}"], ["payment-intents", "confirm"],
                     ["payment-intents", "confirm", "--stripe-payment-intent-id", "pi_1"], ["setup-intents", "create"]):
            same(ours, js + stripe + args, home, as_json=False)

    @check("ours: GPU pricing (billing pricing list, admin billing pricing upsert|delete; the official crashes here)")
    def _():
        js = ["--output", "json"] + cp
        price = '{"gpuType": "GPU_TYPE_H100", "cloudProvider": "CLOUD_PROVIDER_NEBIUS", "hourlyRate": 2.5}'
        rc, out, err = run(ours, js + ["admin", "billing", "pricing", "upsert", "--yes", "--json", price], home)
        assert rc == 0 and json.loads(out)["pricing"]["hourlyRate"] == {"currencyCode": "USD", "units": "2",
                                                                        "nanos": 500000000}, (rc, out, err)
        put = '{"pricing": {"gpuType": "GPU_TYPE_H100", "cloudProvider": "CLOUD_PROVIDER_NEBIUS", "isActive": false}}'
        rc, out, err = run(ours, js + ["admin", "billing", "pricing", "upsert", "--method", "PUT", "--yes", "--json", put],
                           home)
        assert rc == 0 and json.loads(out)["pricing"]["isActive"] is False, (rc, out, err)
        rc, out, _ = run(ours, js + ["billing", "pricing", "list", "--cloud-provider", "CLOUD_PROVIDER_NEBIUS"], home)
        assert rc == 0 and [p["gpuType"] for p in json.loads(out)["pricing"]] == ["GPU_TYPE_H100"], out
        rc, out, _ = run(ours, js + ["billing", "pricing", "list", "--active-only"], home)
        assert rc == 0 and json.loads(out)["pricing"] == [], out
        rc, out, _ = run(ours, js + ["admin", "billing", "pricing", "delete", "--gpu-type", "GPU_TYPE_H100",
                                     "--cloud-provider", "CLOUD_PROVIDER_NEBIUS"], home)
        assert rc == 1 and "Delete GPU pricing gpuType='GPU_TYPE_H100' cloudProvider='CLOUD_PROVIDER_NEBIUS'?" in out
        rc, out, _ = run(ours, js + ["admin", "billing", "pricing", "delete", "--gpu-type", "GPU_TYPE_H100",
                                     "--cloud-provider", "CLOUD_PROVIDER_NEBIUS", "--yes"], home)
        assert (rc, json.loads(out)) == (0, {"empty": {}}), out
        theirs = run(OFFICIAL, js + ["billing", "pricing", "list"], home)
        assert theirs[0] == 1 and "Traceback" in theirs[2], theirs

    @check("parity: doctor and init (missing, token only, ready, invalid user id, broken auth.json, CA bundle)")
    def _():
        uid = "6f1c1e0e-8a55-4e35-9d8e-3c1f2a0b7d11"
        states = {
            "empty": (None, None),
            "token": (None, tokens),
            "ready": (f'[overrides]\ngateway_api_key = "key-abcdefghijkl"\ngateway_user_id = "{uid}"\n'
                      'gateway_model_id = "m1"\n', tokens),
            "key and token": ('[overrides]\ngateway_api_key = "key-abcdefghijkl"\n', tokens),
            "bad user id": ('[managed]\ngateway_user_id = "not-a-uuid"\n', None),
            "broken auth.json": (None, "{not json"),
        }
        for name, (config, auth) in states.items():
            h = tempfile.mkdtemp(prefix="tm-parity-setup-")
            if config:
                with open(os.path.join(h, "config.toml"), "w") as f:
                    f.write(config)
            if auth:
                with open(os.path.join(h, "auth.json"), "w") as f:
                    f.write(auth if isinstance(auth, str) else json.dumps(auth))
            broken = name == "broken auth.json"
            for command in (["doctor"], ["init"], ["doctor", "--exit-status"]):
                # Python's and our JSON parsers word the token file's syntax error differently.
                same(ours, ["--output", "json"] + command, h, normalise=json_error_text if broken else None)
                for fmt in ("text", "yaml", "table", "raw"):
                    if broken:
                        assert run(OFFICIAL, ["--output", fmt] + command, h)[0] == run(ours, ["--output", fmt] + command, h)[0]
                    else:
                        same(ours, ["--output", fmt] + command, h, as_json=False)
        same(ours, ["--ca-bundle", "/nonexistent/ca.pem", "doctor"], empty, as_json=False)
        same(ours, ["--output", "json", "--ca-bundle", "/nonexistent/ca.pem", "doctor"], empty)

    @check("parity: usage errors print the same stderr (usage line of the command, message)")
    def _():
        js = ["--output", "json"] + cp
        for args in (["tickets", "message", " "], ["tickets", "create"], ["users", "update", "x"],
                     ["admin", "products", "delete", " "], ["billing", "address", "update"],
                     ["billing", "address", "update", "--json", "{}"],
                     ["billing", "stripe", "payment-methods", "detach"], ["tickets", "message", "t1", "--json", "[]"],
                     ["admin", "billing", "balances", "add", "--amount", "1", "--yes"]):
            theirs, mine = run(OFFICIAL, js + args, home), run(ours, js + args, home)
            assert (theirs[0], theirs[2]) == (mine[0], mine[2]), (args, theirs, mine)

    @check("ours: a clear usage error (exit 2) where the official CLI crashes with a traceback")
    def _():
        js = ["--output", "json"] + cp
        for args, message in (
                (["tickets", "create", "--json", '{"subject": "s"}'], "Missing required fields"),
                (["tickets", "message", "t1", "--json", '{"userId": "u"}'], "Missing message"),
                (["admin", "products", "upsert", "--yes", "--json", "[]"], "must define a product"),
                (["billing", "stripe", "payment-methods", "attach", "--json", "[]"], "must be a JSON object")):
            theirs = run(OFFICIAL, js + args, home)
            assert theirs[0] == 1 and "Traceback" in theirs[2], (args, theirs)
            rc, out, err = run(ours, js + args, home)
            assert rc == 2 and message in err and "Traceback" not in err, (args, rc, err)

    @check("parity: shell completion (Click's scripts, and the answers for every command, option and value)")
    def _():
        hook = run(ours, ["completion", "bash"], empty)[1].strip()
        assert hook == 'eval "$(_TM_COMPLETE=bash_source tm)"', hook
        completion_parity.check_sources(ours)
        completion_parity.check_in_bash(ours, hook)
        asked = completion_parity.check_protocol(ours)
        print(f"      {asked} completion requests answered alike")

    @check("ours: a closed stdout pipe (`tm ... | head -0`) ends quietly, not with a panic")
    def _():
        for args in (["version"], ["completion", "bash"], ["--output", "json", "config", "show"]):
            r, w = os.pipe()
            os.close(r)
            proc = subprocess.run([ours, *args], stdout=w, stderr=subprocess.PIPE, text=True, timeout=30,
                                  env=dict(os.environ, TM_CONFIG_HOME=empty))
            os.close(w)
            assert proc.returncode == 0 and "panicked" not in proc.stderr, (args, proc.returncode, proc.stderr)

    @check("ours: auth login (browser flow), refresh, logout")
    def _():
        login_home = tempfile.mkdtemp(prefix="tm-parity-login-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORMESH_")}
        env["TM_CONFIG_HOME"] = login_home
        login = subprocess.Popen([ours] + cp + ["auth", "login", "--no-open-browser", "--max-wait-seconds", "30"],
                                 stderr=subprocess.PIPE, text=True, env=env)
        line = login.stderr.readline()
        assert line.startswith("Open browser: "), line
        auth_url = line.split(": ", 1)[1].strip()
        code_line = login.stderr.readline()
        user_code = urllib.parse.parse_qs(urllib.parse.urlparse(auth_url).query)["code"][0]
        assert code_line.startswith(f"Code: {user_code} "), code_line
        approve_link(control, auth_url)
        rest = login.stderr.read()
        assert login.wait(timeout=60) == 0, rest
        auth = os.path.join(login_home, "auth.json")
        assert "Login success. Tokens saved to " + auth in rest, rest
        assert os.stat(auth).st_mode & 0o777 == 0o600
        before = json.load(open(auth))
        rc, out, err = run(ours, cp + ["auth", "refresh"], login_home)
        assert (rc, out) == (0, "Refresh success. Tokens updated.\n"), (rc, out, err)
        assert json.load(open(auth))["refresh_token"] != before["refresh_token"]
        rc, out, _ = run(ours, ["auth", "logout", "--yes"], login_home)
        assert (rc, out) == (0, f"Deleted token file: {auth}\n") and not os.path.exists(auth)
        same(ours, ["auth", "logout", "--yes"], login_home, as_json=False)


if __name__ == "__main__":
    main()
