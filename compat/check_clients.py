"""Drives a real `tensormesh serve` with the OpenAI Python SDK, the official
`tensormesh==0.2.1` SDK and its `tm` CLI, unchanged: every inference route, then the
Control Plane (`tm auth login` through the sign-in page, whoami, refresh, API keys,
billing and `tm cost`, checked against the server's SQLite database).

Usage: python check_clients.py PATH/TO/tensormesh [MODEL] [--models-dir DIR]
Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import urllib.request

import openai
import tensormesh

KEY = "tm-compat-admin-key-0123456789"
ADMIN_EMAIL = "admin@compat.test"
ADMIN_PASSWORD = "compat-password-1"
results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok    {name}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            results.append((name, traceback.format_exc()))
            print(f"FAIL  {name}\n{traceback.format_exc()}")
        return fn
    return wrap


def start_server(binary, model, models_dir, ctx_size=1024, extra_args=(), log_name=None):
    """Starts `tensormesh serve` on free ports with a fresh data dir and the admin's key;
    `log_name`: keep its log in that file of the data dir."""
    data_dir = tempfile.mkdtemp(prefix="tm-compat-data-")
    args = [binary, "serve", "--inference-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0",
            "--data-dir", data_dir, "--model", model,
            "--ctx-size", str(ctx_size), "--parallel", "2", *extra_args]
    if models_dir:
        args += ["--models-dir", models_dir]
    env = dict(os.environ, TENSORMESH_ADMIN_API_KEY=KEY, TENSORMESH_ADMIN_EMAIL=ADMIN_EMAIL,
               TENSORMESH_ADMIN_PASSWORD=ADMIN_PASSWORD)
    env.pop("TENSORMESH_DATABASE_URL", None)
    log = open(os.path.join(data_dir, log_name), "w") if log_name else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    addresses = {}
    for line in proc.stdout:
        for name in ("inference", "control"):
            if line.startswith(f"{name}: "):
                addresses[name] = line.split(" ", 1)[1].strip()
        if len(addresses) == 2:
            return proc, addresses["inference"], addresses["control"], data_dir
    raise SystemExit(f"server exited with {proc.wait()} before printing its addresses")


def main():
    binary = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else "gemma-3-270m"
    models_dir = sys.argv[sys.argv.index("--models-dir") + 1] if "--models-dir" in sys.argv else None
    proc, base, control, data_dir = start_server(binary, model, models_dir)
    try:
        run_checks(base, model)
        run_control_checks(control, base, model, data_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report()


def report():
    """Prints the tally and exits non-zero on any failure."""
    failed = sum(1 for _, err in results if err)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run_checks(base, model):
    oai = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
    tm = tensormesh.Tensormesh(inference_api_key=KEY, serverless_base_url=base)
    inf = tm.inference.serverless
    messages = [{"role": "user", "content": "Say hello."}]

    @check("openai: chat.completions.create")
    def _():
        r = oai.chat.completions.create(model=model, messages=messages, max_tokens=8)
        assert r.choices[0].message.role == "assistant"
        assert r.usage.prompt_tokens > 0 and r.usage.total_tokens >= r.usage.prompt_tokens
        assert r.usage.prompt_tokens_details.cached_tokens >= 0

    @check("openai: chat stream with include_usage")
    def _():
        stream = oai.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True,
                                             stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text, chunks
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    @check("openai: completions.create")
    def _():
        r = oai.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
        assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length")

    @check("openai: responses.create")
    def _():
        r = oai.responses.create(model=model, input="Say hello.", max_output_tokens=8)
        assert r.output_text, r

    @check("openai: responses stream")
    def _():
        events = list(oai.responses.create(model=model, input="Say hello.", max_output_tokens=8, stream=True))
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds

    @check("openai: models.list")
    def _():
        assert [m.id for m in oai.models.list()] == [model]

    @check("openai: errors map to typed exceptions")
    def _():
        try:
            oai.chat.completions.create(model="no-such-model", messages=messages)
            raise AssertionError("expected NotFoundError")
        except openai.NotFoundError:
            pass
        try:
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong").chat.completions.create(model=model, messages=messages)
            raise AssertionError("expected AuthenticationError")
        except openai.AuthenticationError:
            pass

    @check("tensormesh: chat.completions.create")
    def _():
        r = inf.chat.completions.create(model=model, messages=messages, max_tokens=8)
        assert r.choices[0].message.role == "assistant" and r.id and r.model == model

    @check("tensormesh: chat stream with usage")
    def _():
        chunks = list(inf.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True,
                                                  stream_options={"include_usage": True}))
        assert any(c.choices and c.choices[0].delta.content for c in chunks), chunks
        assert chunks[-1].usage is not None

    @check("tensormesh: completions.create (+ stream)")
    def _():
        r = inf.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
        assert r.choices[0].text
        raw = inf.completions.create(model=model, prompt="Once upon a time", max_tokens=8, stream=True)
        lines = [l for l in raw.iter_lines(decode_unicode=True) if l]
        assert lines[-1] == "data: [DONE]", lines

    @check("tensormesh: responses.create")
    def _():
        r = inf.responses.create(model=model, input="Say hello.", max_output_tokens=8)
        assert r.id and r.output

    @check("tensormesh: tokenize / detokenize")
    def _():
        t = inf.tokenize.create(model=model, prompt="Hello world")
        assert t.tokens and t.count == len(t.tokens) and t.max_model_len == 1024
        d = inf.detokenize.create(model=model, tokens=t.tokens)
        assert d.prompt == "Hello world", d.prompt
        m = inf.tokenize.create(model=model, messages=messages)
        assert m.count > t.count

    @check("tensormesh: models / health / version")
    def _():
        assert [m.id for m in inf.models.list().data] == [model]
        assert inf.health.get().status == "ok"
        assert inf.version.get().version

    @check("tensormesh: errors map to typed exceptions with request id")
    def _():
        try:
            inf.chat.completions.create(model=model, messages=messages, temperature=9.0)
            raise AssertionError("expected BadRequestError")
        except tensormesh.BadRequestError as e:
            assert e.status_code == 400 and e.request_id, e
            assert "temperature" in json.dumps(e.body)


    tm_bin = os.path.join(os.path.dirname(sys.executable), "tm")
    # An empty state dir, so no personal config.toml or auth.json is read.
    cli_env = dict(os.environ, TM_CONFIG_HOME=tempfile.mkdtemp(prefix="tm-compat-"))

    def tm_cli(*args, stdin=None):
        out = subprocess.run([tm_bin, "infer", *args, "--base-url", base, "--api-key", KEY],
                             input=stdin, capture_output=True, text=True, env=cli_env, timeout=120)
        assert out.returncode == 0, (args, out.returncode, out.stdout, out.stderr)
        return out.stdout

    @check("tm infer chat (+ --stream)")
    def _():
        body = json.dumps({"messages": messages, "max_tokens": 8})
        assert tm_cli("chat", "--model", model, "--json", body).strip()
        assert tm_cli("chat", "--model", model, "--stream", stdin=body).strip()

    @check("tm infer completions / tokenize / health / version / models")
    def _():
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 8})
        assert tm_cli("completions", "--model", model, "--json", body).strip()
        assert tm_cli("health").strip() == "ok"
        assert tm_cli("version").strip()
        assert model in tm_cli("models")


def approve_in_browser(auth_url, email, password):
    """What a browser does on the sign-in page: submit the form with the approve button."""
    page = urllib.request.urlopen(auth_url, timeout=10).read().decode()
    request = re.search(r'name="request" value="([^"]+)"', page).group(1)
    code = re.search(r'name="code" value="([^"]+)"', page).group(1)
    assert f"code={code}" in auth_url, "the link the CLI prints shows the code the page shows"
    form = urllib.parse.urlencode({"request": request, "code": code, "email": email, "password": password,
                                   "confirm": "yes", "action": "approve"}).encode()
    action = urllib.parse.urljoin(auth_url, "/auth/cli/login")
    answer = urllib.request.urlopen(action, data=form, timeout=10).read().decode()
    assert "Signed in as" in answer, answer


def approve_in_chromium(auth_url, email, password):
    """The same in a real browser: headless Chromium (Debian's), driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(auth_url)
        shown = driver.find_element(By.CSS_SELECTOR, "p.code").text
        assert auth_url.endswith(f"code={shown}"), (shown, auth_url)
        driver.find_element(By.NAME, "email").send_keys(email)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.NAME, "confirm").click()
        driver.find_element(By.CSS_SELECTOR, 'button[value="approve"]').click()
        WebDriverWait(driver, 15).until(lambda d: "Signed in as" in d.page_source)
    finally:
        driver.quit()


def browser_available():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def run_control_checks(control, base, model, data_dir):
    tm_bin = os.path.join(os.path.dirname(sys.executable), "tm")
    home = tempfile.mkdtemp(prefix="tm-compat-cp-")
    env = dict(os.environ, TM_CONFIG_HOME=home)

    def tm(*args):
        out = subprocess.run([tm_bin, "--controlplane-base", control, "--output", "json", *args],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, (args, out.returncode, out.stdout, out.stderr)
        return out.stdout

    in_browser = browser_available()
    if os.environ.get("TM_COMPAT_REQUIRE_BROWSER") == "1" and not in_browser:
        raise SystemExit("TM_COMPAT_REQUIRE_BROWSER=1 but chromium, chromedriver or selenium is missing")
    how = "in headless Chromium" if in_browser else "form posted over HTTP: no chromium/chromedriver/selenium"

    @check(f"tm auth login (browser flow, approved on the sign-in page {how})")
    def _():
        login = subprocess.Popen([tm_bin, "--controlplane-base", control, "auth", "login", "--no-open-browser",
                                  "--max-wait-seconds", "60"], stderr=subprocess.PIPE, text=True, env=env)
        line = login.stderr.readline()
        assert line.startswith("Open browser: "), line
        approve = approve_in_chromium if in_browser else approve_in_browser
        approve(line.split(": ", 1)[1].strip(), ADMIN_EMAIL, ADMIN_PASSWORD)
        rest = login.stderr.read()
        assert login.wait(timeout=60) == 0, rest
        assert "Login success" in rest, rest
        saved = json.load(open(os.path.join(home, "auth.json")))
        assert saved["access_token"] and saved["refresh_token"]

    @check("tm auth whoami / refresh / whoami")
    def _():
        assert json.loads(tm("auth", "whoami"))["user"]["userEmail"] == ADMIN_EMAIL
        before = json.load(open(os.path.join(home, "auth.json")))
        subprocess.run([tm_bin, "--controlplane-base", control, "auth", "refresh"], check=True, env=env,
                       capture_output=True, timeout=60)
        after = json.load(open(os.path.join(home, "auth.json")))
        assert after["refresh_token"] != before["refresh_token"]
        assert json.loads(tm("auth", "whoami"))["user"]["userEmail"] == ADMIN_EMAIL

    @check("tm users api-keys create / list, and the new key on inference")
    def _():
        user_id = json.loads(tm("auth", "whoami"))["user"]["id"]
        created = json.loads(tm("users", "api-keys", "create", "--user-id", user_id, "--name", "compat", "--yes"))
        key = created["apiKey"]["id"] if "apiKey" in created else created["id"]
        listed = tm("users", "api-keys", "list")
        assert key[:14] in listed and key not in listed, listed
        oai = openai.OpenAI(base_url=f"{base}/v1", api_key=key)
        assert oai.completions.create(model=model, prompt="Hi", max_tokens=2).usage.prompt_tokens > 0

    token = json.load(open(os.path.join(home, "auth.json")))["access_token"]
    sdk = tensormesh.Tensormesh(control_plane_token=token, control_plane_base_url=control)

    @check("tensormesh SDK: users (profile, accept_tos, update) and api_keys (create, list, delete)")
    def _():
        me = sdk.control_plane.users.get_auth_profile()
        assert me.user_email == ADMIN_EMAIL and me.user_role == "USER_ROLE_SUPER_ADMIN"
        assert sdk.control_plane.users.accept_tos().tos_accepted_at
        sdk.control_plane.users.update(user_id=me.id, company="Compat Inc")
        assert sdk.control_plane.users.get_auth_profile().company == "Compat Inc"
        created = sdk.control_plane.users.api_keys.create(user_id=me.id, name="sdk")
        listed = sdk.control_plane.users.api_keys.list(include_deleted=True)
        public_ids = [k.id for k in listed]
        assert created.id[:14] in public_ids
        sdk.control_plane.users.api_keys.delete(api_key=created.id[:14])
        try:
            openai.OpenAI(base_url=f"{base}/v1", api_key=created.id).models.list()
            openai.OpenAI(base_url=f"{base}/v1", api_key=created.id).completions.create(
                model=model, prompt="Hi", max_tokens=1)
            raise AssertionError("a deleted key still works")
        except openai.AuthenticationError:
            pass

    @check("tensormesh SDK: admin users list and an expired/invalid token is AuthenticationError")
    def _():
        page = sdk.control_plane.admin.users.list(page=1, size=10)
        assert any(u.user_email == ADMIN_EMAIL for u in page.users), page
        bad = tensormesh.Tensormesh(control_plane_token="tm_at_nothing0_" + "x" * 32,
                                    control_plane_base_url=control)
        try:
            bad.control_plane.users.get_auth_profile()
            raise AssertionError("expected AuthenticationError")
        except tensormesh.AuthenticationError as e:
            assert e.request_id

    run_billing_checks(tm, base, model, data_dir)


def money(m):
    return int(m.get("units") or 0) * 10**9 + int(m.get("nanos") or 0)


def run_billing_checks(tm, base, model, data_dir):
    def db():
        return sqlite3.connect(os.path.join(data_dir, "tensormesh.db"))

    def settled():
        for _ in range(200):
            if db().execute("SELECT COALESCE(SUM(held_nanos), 0) FROM accounts").fetchone()[0] == 0:
                return
            time.sleep(0.05)
        raise AssertionError("money still held after the requests ended")

    @check("tm billing balance / pricing / transactions / spending summary and tm cost match the database "
           "to the nano-dollar")
    def _():
        from decimal import Decimal
        oai = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
        system = "You are a meticulous assistant for a small bakery. " * 12
        for i in range(3):  # a shared prefix, so the KV cache saves something
            oai.chat.completions.create(model=model, max_tokens=3, messages=[
                {"role": "system", "content": system}, {"role": "user", "content": f"Question {i}?"}])
        settled()
        con = db()
        admin_id = con.execute("SELECT id FROM users WHERE email = ?", (ADMIN_EMAIL,)).fetchone()[0]
        balance = con.execute("SELECT balance_nanos FROM accounts WHERE user_id = ?", (admin_id,)).fetchone()[0]
        spent, events, prompt, completion, cached = con.execute(
            "SELECT SUM(cost_nanos), COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens) "
            "FROM usage_records WHERE user_id = ? AND model = ?", (admin_id, model)).fetchone()
        price = con.execute("SELECT input_per_mtok FROM serverless_pricing WHERE model = ? AND is_active <> 0",
                            (model,)).fetchone()[0]
        assert cached > 0 and spent > 0 and balance == 100 * 10**9 - spent, (cached, spent, balance)

        assert money(json.loads(tm("billing", "balance"))["balance"]) == balance
        rows = json.loads(tm("billing", "pricing", "serverless", "list", "--active-only"))["pricing"]
        assert [money(r["inputTokenPrice"]) for r in rows if r["model"] == model] == [price], rows
        txs = json.loads(tm("billing", "transactions", "list"))["transactions"]
        charges = [t for t in txs if t["type"] == "TRANSACTION_TYPE_CHARGE"]
        assert len(charges) == 1 and money(charges[0]["amount"]) == spent, txs
        summary = json.loads(tm("billing", "spending", "summary"))
        assert money(summary["spend24h"]) == spent == money(summary["spend30d"]), summary

        cost = json.loads(tm("cost"))
        (row,) = [m for m in cost["per_model"] if m["model"] == model]
        assert (row["events"], row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == \
            (events, prompt, completion, cached), (row, events, prompt, completion, cached)
        assert Decimal(row["spend"]) == Decimal(spent) / 10**9, (row, spent)
        assert Decimal(row["cache_saving"]) == Decimal(cached) * Decimal(price) / 10**9 / 10**6, row


if __name__ == "__main__":
    main()
