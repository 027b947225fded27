"""The web console in headless Chromium (Selenium), doing what people do: an admin signs in,
creates a user and tops them up; the user signs in, reads the balance, creates an API key
and uses it on the Inference API (OpenAI SDK), sees the day's usage in the charts, exports
the transactions as CSV and parses them, opens a ticket, chats in the playground (streamed)
approves a `tm auth login` with one click, and signs out; the admin answers the ticket; the user reads the answer and closes it.
Along the way: every input has a label, text has at least 4.5:1 contrast, the pages fit a
phone-width window, the keyboard reaches the navigation, and each page is saved as a screenshot at 1,400 px and at 390 px
(under target/console-screenshots/). Prints the overview's page weight.

Usage: python check_console.py PATH/TO/tensormesh [MODEL]
"""

import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

import openai
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import Select, WebDriverWait

sys.path.insert(0, os.path.dirname(__file__))
from check_clients import ADMIN_EMAIL, ADMIN_PASSWORD, check, report, results, start_server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(ROOT, "target", "console-screenshots")
USER_EMAIL = "alice@console.test"
USER_PASSWORD = "alice-password-1"
DESKTOP, PHONE = (1400, 900), (390, 844)


def browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": downloads,
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    return driver


class Console:
    def __init__(self, driver, control):
        self.d, self.control = driver, control

    def go(self, path):
        self.d.get(self.control + path)
        WebDriverWait(self.d, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def sign_in(self, email, password):
        self.go("/")
        assert "/console/sign-in" in self.d.current_url, self.d.current_url
        self.d.find_element(By.ID, "email").send_keys(email)
        self.d.find_element(By.ID, "password").send_keys(password + Keys.ENTER)
        WebDriverWait(self.d, 15).until(lambda d: d.find_elements(By.ID, "signed-in-as"))
        assert self.d.find_element(By.ID, "signed-in-as").text == email

    def sign_out(self):
        self.d.find_element(By.CSS_SELECTOR, "form.who button").click()
        WebDriverWait(self.d, 15).until(lambda d: "/console/sign-in" in d.current_url)

    def text(self, css):
        found = self.d.find_elements(By.CSS_SELECTOR, css)
        assert found, f"no {css} on {self.d.current_url} (title {self.d.title!r})"
        return found[0].text

    def fill(self, fields):
        for element_id, value in fields.items():
            element = self.d.find_element(By.ID, element_id)
            if element.tag_name == "select":
                Select(element).select_by_value(value)
            else:
                element.clear()
                element.send_keys(value)

    def submit(self, css):
        """Clicks what `css` names and waits for the page it leads to."""
        self.follow(self.d.find_element(By.CSS_SELECTOR, css))

    def follow(self, element):
        """Clicks `element` and waits until the next page has loaded. The old page's readyState
        is "complete" too, so first wait for it to go (its root element goes stale); without
        that, a lookup right after the click can land between the two pages."""
        old_page = self.d.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(self.d, 15).until(staleness_of(old_page))
        WebDriverWait(self.d, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def unlabelled_inputs(self):
        return self.d.execute_script(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
            ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))"
            ".map(e => e.name || e.id)")

    def low_contrast(self):
        """Text whose contrast with its background is under WCAG AA's 4.5:1 (computed styles)."""
        return self.d.execute_script("""
            const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
            const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255;
                return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
              .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
            const background = e => { for (; e; e = e.parentElement) {
                const c = rgb(getComputedStyle(e).backgroundColor);
                if (c.length === 3 || c[3] > 0) return c.slice(0, 3); } return [255, 255, 255]; };
            const bad = [];
            for (const e of document.querySelectorAll('body *')) {
              if (!e.offsetParent || ![...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
              if (e.closest('svg')) continue;
              const [a, b] = [lum(rgb(getComputedStyle(e).color).slice(0, 3)), lum(background(e))];
              const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
              if (ratio < 4.5) bad.push(e.tagName + ' "' + e.textContent.trim().slice(0, 30) + '" ' + ratio.toFixed(2));
            }
            return bad.slice(0, 5);""")

    def shoot(self, name):
        """Screenshots at desktop and phone width (the whole page), and the phone-width fit."""
        os.makedirs(SHOTS, exist_ok=True)
        overflow = None
        for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
            self.d.set_window_size(width, height)
            time.sleep(0.2)
            if label == "phone":
                overflow = self.d.execute_script(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            full = self.d.execute_script("return document.documentElement.scrollHeight")
            self.d.set_window_size(width, max(height, min(full + 120, 8000)))
            time.sleep(0.2)
            self.d.save_screenshot(os.path.join(SHOTS, f"{name}-{label}.png"))
        self.d.set_window_size(*DESKTOP)
        assert overflow is not None and overflow <= 1, f"{name}: {overflow}px wider than a phone's window"
        missing = self.unlabelled_inputs()
        assert not missing, f"{name}: inputs without a label: {missing}"
        faint = self.low_contrast()
        assert not faint, f"{name}: text under 4.5:1 contrast: {faint}"


def main():
    binary = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else "gemma-3-270m"
    proc, base, control, data_dir = start_server(binary, model, None, log_name="server.log")
    downloads = tempfile.mkdtemp(prefix="tm-console-downloads-")
    driver = browser(downloads)
    c = Console(driver, control)
    state = {}
    try:
        run(c, base, model, downloads, state)
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
    print(f"screenshots: {SHOTS} ({len(os.listdir(SHOTS)) if os.path.isdir(SHOTS) else 0} files)")
    if any(err for _, err in results):
        # What the server said about it (its log is otherwise not shown).
        with open(os.path.join(data_dir, "server.log"), encoding="utf-8", errors="replace") as log:
            noted = [line for line in log if " WARN " in line or " ERROR " in line]
        print("server warnings and errors:\n" + "".join(noted[-20:] or ["(none)\n"]), end="")
    report()


def run(c, base, model, downloads, state):
    @check("signed out, / shows the sign-in page; it fits a phone and labels its inputs")
    def _():
        c.go("/")
        assert "/console/sign-in" in c.d.current_url
        c.shoot("sign-in")

    @check("an admin signs in, creates a user and tops them up with a reason")
    def _():
        c.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        c.go("/console/admin/users")
        c.fill({"new-email": USER_EMAIL, "new-password": USER_PASSWORD, "new-first": "Alice", "new-role": "USER_ROLE_USER"})
        c.submit("form[action='/console/admin/users'] button[type=submit]")
        row = c.d.find_element(By.CSS_SELECTOR, f"tr[data-email='{USER_EMAIL}']")
        row.find_element(By.TAG_NAME, "summary").click()
        row.find_element(By.CSS_SELECTOR, "input[name=amount]").send_keys("5")
        row.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("welcome credit")
        c.follow(row.find_element(By.CSS_SELECTOR, "input[value=top_up]").find_element(By.XPATH, "..").find_element(
            By.CSS_SELECTOR, "button[type=submit]"))
        WebDriverWait(c.d, 15).until(
            lambda d: "$5.00" in d.find_element(By.CSS_SELECTOR, f"tr[data-email='{USER_EMAIL}'] [data-balance]").text)
        for page in ("users", "prices", "tickets", "activities"):
            c.go(f"/console/admin/{page}")
            c.shoot(f"admin-{page}")
        assert "welcome credit" in c.d.page_source
        c.sign_out()

    @check("the user signs in and the overview shows the admin's top-up")
    def _():
        c.sign_in(USER_EMAIL, USER_PASSWORD)
        assert c.text("#balance") == "$5.00", c.text("#balance")
        assert "Admin" not in c.text("nav[aria-label=Console]")

    @check("the keyboard reaches the skip link, the navigation and sign-out")
    def _():
        c.go("/")
        body = c.d.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        reached = []
        for _ in range(12):
            active = c.d.switch_to.active_element
            reached.append(active.text.strip())
            active.send_keys(Keys.TAB)
        assert reached[0] == "Skip to content", reached
        for expected in ("Usage", "API keys", "Billing", "Playground", "Sign out"):
            assert expected in reached, (expected, reached)

    @check("the user creates an API key (shown once, copy button) and uses it on the Inference API")
    def _():
        c.go("/console/keys")
        c.fill({"key-name": "laptop"})
        c.submit("form[action='/console/keys'] button[type=submit]")
        token = c.text("#new-key")
        assert token.startswith("tm"), token
        c.d.find_element(By.CSS_SELECTOR, "button[data-copy]").click()
        WebDriverWait(c.d, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-copied]").text)
        c.shoot("keys-created")
        client = openai.OpenAI(base_url=base + "/v1", api_key=token)
        question = "Repeat after me, in one short sentence: the console shows what the cache saved. " * 4
        for _ in range(3):
            answer = client.chat.completions.create(model=model, max_tokens=12,
                                                    messages=[{"role": "user", "content": question}])
            state.setdefault("usage", []).append(answer.usage)
        assert state["usage"][-1].prompt_tokens_details.cached_tokens > 0, state["usage"][-1]
        c.go("/console/keys")
        last_used = c.d.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr td")[3].text
        assert last_used.endswith("UTC"), f"last used: {last_used!r}"
        c.shoot("keys")

    @check("the usage page charts the day's requests, cache hits included, and filters by key")
    def _():
        c.go("/console/usage")
        svg = c.d.find_element(By.CSS_SELECTOR, "#tokens-chart svg")
        assert svg.get_attribute("role") == "img" and svg.get_attribute("aria-label")
        bars = c.d.find_elements(By.CSS_SELECTOR, "#tokens-chart svg rect")
        assert len(bars) > 30, len(bars)
        assert c.d.find_elements(By.CSS_SELECTOR, "#hit-rate-chart svg circle"), "no hit-rate point for today"
        assert c.text("#total-requests") == "3", c.text("#total-requests")
        prompt = sum(u.prompt_tokens for u in state["usage"])
        table = c.text("#usage-table tbody")
        assert f"{prompt:,}" in table, (prompt, table)
        key = Select(c.d.find_element(By.ID, "key"))
        key.select_by_visible_text("Console and Control Plane chats")
        c.submit(".filters button")
        assert c.text("#total-requests") == "0"
        c.go("/console/usage")
        c.shoot("usage")

    @check("the user exports the transactions as CSV and it parses")
    def _():
        c.go("/console/billing")
        c.shoot("billing")
        c.d.find_element(By.ID, "export-csv").click()
        path = os.path.join(downloads, "tensormesh-transactions.csv")
        deadline = time.time() + 15
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.2)
        rows = list(csv.DictReader(io.StringIO(open(path, encoding="utf-8").read())))
        assert rows[0].keys() >= {"date", "type", "model", "input_tokens", "cached_tokens", "amount_usd"}, rows[0]
        kinds = {r["type"] for r in rows}
        assert kinds == {"top_up", "charge"}, rows
        charge = next(r for r in rows if r["type"] == "charge")
        assert int(charge["requests"]) == 3 and charge["model"] == model, charge
        assert int(charge["cached_tokens"]) == sum(u.prompt_tokens_details.cached_tokens for u in state["usage"]), charge

    @check("the user opens a ticket")
    def _():
        c.go("/console/support")
        c.fill({"subject": "Invoice address", "kind": "TICKET_TYPE_BILLING", "message": "Please add my VAT number."})
        c.submit("form[action='/console/support'] button[type=submit]")
        assert c.text("#ticket-status") == "Open"
        state["ticket"] = c.d.current_url
        c.shoot("ticket")
        c.go("/console/support")
        c.shoot("support")

    @check("the user chats in the playground, streamed, billed to them")
    def _():
        c.go("/console/playground")
        c.fill({"pg-message": "Say hello in three words."})
        c.d.find_element(By.CSS_SELECTOR, "#playground button[type=submit]").click()
        WebDriverWait(c.d, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#conversation .assistant .pre")
                                      and d.find_element(By.CSS_SELECTOR, "#playground button[type=submit]").is_enabled()
                                      and d.find_element(By.CSS_SELECTOR, "#conversation .assistant .pre").text.strip())
        assert c.d.current_url.endswith("/console/playground"), "the answer came without a page load (streamed)"
        c.shoot("playground")
        c.go("/console/usage")
        assert c.text("#total-requests") == "4", c.text("#total-requests")

    @check("the overview shows the spend chart and cache savings")
    def _():
        c.go("/")
        assert c.d.find_elements(By.CSS_SELECTOR, "#spend-chart svg rect")
        assert c.text("#cache-saved").startswith("$0.0"), c.text("#cache-saved")
        weight = c.d.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return [n.decodedBodySize].concat(performance.getEntriesByType('resource')"
            ".map(r => r.decodedBodySize));")
        print(f"overview page weight: {sum(weight):,} bytes (HTML {weight[0]:,}, CSS and script {sum(weight[1:]):,})")
        c.shoot("overview")

    @check("signed in to the console, the user approves a `tm auth login` with one click")
    def _():
        start = urllib.request.Request(c.control + "/auth/cli/start", method="POST")
        started = json.load(urllib.request.urlopen(start, timeout=10))
        c.d.get(started["auth_url"])
        assert c.text("p.code") == started["user_code"]
        assert not c.d.find_elements(By.NAME, "password"), "signed in: no password asked"
        c.d.save_screenshot(os.path.join(SHOTS, "cli-approve-desktop.png"))
        c.d.find_element(By.CSS_SELECTOR, "button[value=approve_signed_in]").click()
        WebDriverWait(c.d, 15).until(lambda d: "Signed in as" in d.page_source)
        exchange = urllib.request.Request(c.control + "/auth/cli/exchange", method="POST",
                                          data=json.dumps({"cli_code": started["cli_code"]}).encode(),
                                          headers={"content-type": "application/json"})
        tokens = json.load(urllib.request.urlopen(exchange, timeout=10))
        profile = urllib.request.Request(c.control + "/auth/profile",
                                         headers={"authorization": "Bearer " + tokens["access_token"]})
        assert json.load(urllib.request.urlopen(profile, timeout=10))["user"]["userEmail"] == USER_EMAIL
        c.go("/")

    @check("the user signs out; the console asks to sign in again")
    def _():
        c.sign_out()
        c.go("/console/usage")
        assert "/console/sign-in" in c.d.current_url

    @check("the admin answers the ticket")
    def _():
        c.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        c.go("/console/admin/tickets")
        c.follow(c.d.find_element(By.LINK_TEXT, "Invoice address"))
        c.fill({"reply": "Done: the VAT number is on your invoices."})
        c.submit("form[action$='/reply'] button[type=submit]")
        assert "VAT number is on your invoices" in c.text("ol.messages")
        c.sign_out()

    @check("the user reads the answer and closes the ticket")
    def _():
        c.sign_in(USER_EMAIL, USER_PASSWORD)
        c.d.get(state["ticket"])
        assert "(support)" in c.text("ol.messages")
        c.submit("#close-ticket")
        assert c.text("#ticket-status") == "Closed"
        c.sign_out()


if __name__ == "__main__":
    main()
