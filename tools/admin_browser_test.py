#!/usr/bin/env python3
"""Drives the admin pages of a running `syncledger serve` in headless Chromium (Selenium).

Started by Tests/ServiceTests/AdminBrowserTests.swift, which runs the syncs, starts the server
and passes its address and tokens. Every step that fails raises; the exit code is 0 only when
all passed. A screenshot of each page goes to --out (each path is printed).

  admin_browser_test.py --base http://127.0.0.1:PORT --admin-token T --reader-token R \
      --out DIR --org fsh --other-org ORG --zone America/Denver --script-name '<script>…'
"""
import argparse
import csv
import datetime
import glob
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


class Check(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Check(message)


class Run:
    def __init__(self, args):
        self.a = args
        self.base = args.base.rstrip("/")
        self.zone = zoneinfo.ZoneInfo(args.zone)
        self.shots = 0
        self.downloads = os.path.join(args.out, "downloads")
        os.makedirs(self.downloads, exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = args.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
            opts.add_argument(flag)
        opts.add_experimental_option("prefs", {
            "download.default_directory": self.downloads, "download.prompt_for_download": False,
            "safebrowsing.enabled": False})
        self.d = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=opts)
        self.d.set_page_load_timeout(60)
        self.d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": self.downloads})

    # -- helpers ---------------------------------------------------------------------------
    def api(self, path):
        req = urllib.request.Request(self.base + path, headers={"Authorization": "Bearer " + self.a.admin_token})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def shot(self, name):
        self.shots += 1
        path = os.path.join(self.a.out, "%02d-%s.png" % (self.shots, name))
        self.d.save_screenshot(path)
        print("screenshot: " + path, flush=True)

    def get(self, path):
        self.d.get(self.base + path)

    def text(self, css):
        """An element's text, read in one script (no stale element if the page reloads itself)."""
        t = self.d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)
        check(t is not None, "no %s on %s" % (css, self.d.current_url))
        return t.strip()

    def no_alert(self):
        try:
            self.d.switch_to.alert
        except NoAlertPresentException:
            return
        raise Check("a JavaScript alert opened: some text was not escaped")

    @staticmethod
    def attached(element):
        """False once the page holding `element` has been replaced (a form submit landed)."""
        try:
            element.is_enabled()
            return True
        except Exception:
            return False

    def click_and_wait(self, element):
        element.click()
        WebDriverWait(self.d, 30).until(lambda d: not self.attached(element))

    def run_rows(self):
        """The runs table, read in one script (the page reloads itself while a run is pending)."""
        return self.d.execute_script("""
            return [...document.querySelectorAll('#runs tr[data-run]')].map(tr => {
              const c = [...tr.querySelectorAll('td')].map(td => td.innerText.trim());
              return {id: tr.dataset.run, started: c[0], type: c[1], scope: c[2], status: c[3],
                      pending: tr.classList.contains('pending')};
            });""")

    def local(self, iso):
        t = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(self.zone)
        return t.strftime("%Y-%m-%d %H:%M ") + t.tzname()

    def wait_run(self, run_id, path="/admin/runs", timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.get(path)
            row = next((r for r in self.run_rows() if r["id"] == run_id), None)
            if row and not row["pending"] and row["status"] in ("completed", "partial_success", "failed"):
                return row
            time.sleep(0.5)
        raise Check("run %s did not finish within %d s" % (run_id, timeout))

    def session_cookie(self):
        c = self.d.get_cookie("syncledger_admin")
        return c["value"] if c else None

    def post_raw(self, path, fields, cookie):
        data = urllib.parse.urlencode(fields).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST",
                                     headers={"Cookie": "syncledger_admin=" + cookie,
                                              "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def queued_after(self, button_id):
        """Presses a refresh button; returns the queued run's id once the redirect has landed."""
        self.d.find_element(By.ID, button_id).click()
        WebDriverWait(self.d, 30).until(lambda d: "queued=" in d.current_url)
        return self.d.current_url.split("queued=")[-1]

    def login(self, token):
        self.get("/admin/login")
        box = self.d.find_element(By.ID, "token")
        box.clear()
        box.send_keys(token)
        old = self.d.find_element(By.ID, "sign-in")
        old.click()
        WebDriverWait(self.d, 30).until(lambda d: not self.attached(old))

    # -- the story -------------------------------------------------------------------------
    def steps(self):
        # Not signed in: the login page.
        self.get("/admin/runs")
        check(self.d.current_url.endswith("/admin/login"), "an anonymous /admin/runs did not go to the login page: " + self.d.current_url)
        self.shot("login")

        # A wrong token and a reader token are refused; no session cookie is set.
        self.login("slt_" + "0" * 64)
        check("Unknown token" in self.text("#error"), "a wrong token was not refused")
        check(self.session_cookie() is None, "a wrong token got a session cookie")
        self.shot("wrong-token")
        self.login(self.a.reader_token)
        check("reader token" in self.text("#error"), "a reader token was not refused")
        check(self.session_cookie() is None, "a reader token got a session cookie")
        self.shot("reader-token-refused")

        # The admin token: the health page.
        self.login(self.a.admin_token)
        check(self.d.current_url.endswith("/admin"), "after sign-in the browser is at " + self.d.current_url)
        check(self.text("h1") == "Health", "the health page did not open")
        check(self.session_cookie() is not None, "no session cookie after sign-in")
        cookie = self.d.get_cookie("syncledger_admin")
        check(cookie.get("httpOnly") and cookie.get("sameSite") == "Strict", "the session cookie is not HttpOnly + SameSite=Strict: %r" % cookie)
        self.no_alert()
        self.shot("dashboard")

        # The runs table shows the demo's runs, in the practice's local time.
        api_runs = self.api("/api/v1/sync-logs")
        demo = [r for r in api_runs if r["triggered_by"] == "demo"]
        check(len(demo) >= 3, "the store holds %d demo runs" % len(demo))
        self.get("/admin/runs")
        rows = self.run_rows()
        by_id = {r["id"]: r for r in rows}
        for r in demo:
            check(r["id"] in by_id, "demo run %s is not in the runs table" % r["id"])
            want = self.local(r["started_at"])
            check(by_id[r["id"]]["started"] == want, "run %s shows %r, expected local time %r" % (r["id"], by_id[r["id"]]["started"], want))
        check(self.d.find_element(By.CSS_SELECTOR, "svg#chart rect.bar") is not None, "no chart")
        print("runs table: %d rows, local times match the API (%s)" % (len(rows), self.a.zone), flush=True)
        self.shot("runs")

        # Refresh one organisation, then filter by organisation and status.
        Select(self.d.find_element(By.CSS_SELECTOR, "#refresh-org select")).select_by_value(self.a.org)
        org_run = self.queued_after("refresh-org-button")
        check(len(org_run) > 8 and "queued" in self.text("#flash"), "the organisation refresh showed no queued run")
        self.wait_run(org_run)
        Select(self.d.find_element(By.ID, "f-org")).select_by_value(self.a.org)
        Select(self.d.find_element(By.ID, "f-status")).select_by_visible_text("completed")
        self.d.find_element(By.ID, "apply").click()
        WebDriverWait(self.d, 30).until(lambda d: "status=" in d.current_url)
        check("org=" + self.a.org in self.d.current_url and "status=completed" in self.d.current_url, "the filter was not applied: " + self.d.current_url)
        rows = self.run_rows()
        check(any(r["id"] == org_run for r in rows), "the organisation's run is missing from its filter")
        check(all(r["status"] == "completed" and r["scope"].startswith(("organisation", "patient")) for r in rows),
              "the filter let other runs through: %r" % rows)
        self.shot("runs-filtered")
        self.get("/admin/runs?org=" + urllib.parse.quote(self.a.other_org))
        check(not any(r["id"] == org_run for r in self.run_rows()), "another organisation's filter shows the run")
        self.get("/admin/runs?status=failed")
        check(all(r["status"] == "failed" for r in self.run_rows()), "status=failed shows other runs")

        # Refresh all: the new run appears in the table.
        self.get("/admin/runs")
        before = len(self.run_rows())
        new_run = self.queued_after("refresh-all-button")
        check("queued" in self.text("#flash"), "Refresh all showed no queued run")
        self.shot("refresh-all-queued")
        row = self.wait_run(new_run)
        check(row["status"] == "completed", "the new run ended %s" % row["status"])
        check(len(self.run_rows()) == before + 1, "the runs table did not grow by one")
        self.shot("runs-after-refresh")

        # Open the run.
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "#runs tr[data-run='%s'] a" % new_run))
        check(self.text("#run-status") == "completed", "the run page does not say completed")
        check("calls" in self.text("#api-calls"), "the run page shows no API calls")
        self.shot("run")

        # A later demo run updated appointments: open one it changed, and its history.
        later = [r for r in demo if r["appointments_updated"] > 0]
        check(later, "no demo run updated an appointment")
        self.get("/admin/runs/" + later[0]["id"])
        rows = self.d.find_elements(By.CSS_SELECTOR, "#changes tr")[1:]
        changed = [tr for tr in rows if tr.find_element(By.TAG_NAME, "td").text == "changed"]
        check(len(changed) == later[0]["appointments_updated"],
              "the run page lists %d changed appointments, sync_logs says %d" % (len(changed), later[0]["appointments_updated"]))
        self.shot("run-with-changes")
        self.click_and_wait(changed[0].find_element(By.TAG_NAME, "a"))
        check(self.text("h1").startswith("Appointment"), "the appointment page did not open")
        events = [tr.find_elements(By.TAG_NAME, "td")[1].text for tr in self.d.find_elements(By.CSS_SELECTOR, "#history tr")[1:]]
        check("new" in events and "changed" in events, "the history lacks its versions: %r" % events)
        self.shot("appointment-history")

        # Escaping: the roster patient named like a script shows as text.
        self.get("/admin/appointments?q=" + urllib.parse.quote("alert(1)"))
        self.no_alert()
        names = [td.text for td in self.d.find_elements(By.CSS_SELECTOR, "#results td:nth-child(2)")]
        check(self.a.script_name in names, "the script-named patient is not shown as text: %r" % names[:5])
        check(len(self.d.find_elements(By.CSS_SELECTOR, "main script")) == 0, "a <script> element made it into the page")
        self.shot("appointments-escaped")
        self.get("/admin/appointments")
        check(len(self.d.find_elements(By.CSS_SELECTOR, "#upcoming h3")) >= 2, "no upcoming section per organisation")
        self.shot("appointments")

        # Download the CSV and parse it.
        self.get("/admin/runs?type=automated_daily")
        shown = len(self.run_rows())
        for f in glob.glob(os.path.join(self.downloads, "*")):
            os.remove(f)
        self.d.find_element(By.ID, "csv").click()
        path = None
        deadline = time.time() + 30
        while time.time() < deadline and not path:
            done = [f for f in glob.glob(os.path.join(self.downloads, "*.csv"))]
            path = done[0] if done else None
            time.sleep(0.2)
        check(path is not None, "the CSV was not downloaded into " + self.downloads)
        with open(path, newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f))
        check(len(table) == shown, "the CSV has %d rows, the filtered table %d" % (len(table), shown))
        check(all(r["sync_type"] == "automated_daily" for r in table), "the CSV ignores the type filter")
        check(all(r["started_local"].endswith(("-07:00", "-06:00")) or self.a.zone == "UTC" for r in table),
              "the CSV's local times are not in the practice's zone")
        check({r["id"] for r in demo} <= {r["id"] for r in table}, "the CSV misses demo runs")
        print("csv: %s, %d rows" % (path, len(table)), flush=True)

        # A POST without the CSRF token (or with a wrong one) is refused with 403, and queues nothing.
        queued_before = self.api("/api/v1/status")["queue"]["queued"]
        self.get("/admin/runs")
        self.d.execute_script("document.querySelector('#refresh-all input[name=csrf]').remove()")
        self.click_and_wait(self.d.find_element(By.ID, "refresh-all-button"))
        check(self.text("h1") == "Forbidden" and "CSRF" in self.text("#message"), "a POST without the CSRF token was not refused")
        self.shot("csrf-refused")
        cookie = self.session_cookie()
        check(self.post_raw("/admin/refresh", {"scope": "all"}, cookie) == 403, "a raw POST without csrf was not 403")
        check(self.post_raw("/admin/refresh", {"scope": "all", "csrf": "0" * 64}, cookie) == 403, "a raw POST with a wrong csrf was not 403")
        check(self.api("/api/v1/status")["queue"]["queued"] == queued_before, "a refused POST queued a run")

        # Readable on a phone: nothing wider than the screen but the scrolling tables.
        self.d.set_window_size(390, 844)
        for page in ("/admin", "/admin/runs", "/admin/appointments"):
            self.get(page)
            wide = self.d.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1")
            culprits = self.d.execute_script(
                "return [...document.querySelectorAll('body *')].filter(e => !e.closest('.scroll') && "
                "e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 5).map(e => e.tagName + '.' + e.className)")
            check(not wide, "%s is wider than a phone screen: %r" % (page, culprits))
            self.shot("phone-" + (page.strip("/").replace("/", "-") or "admin"))
        self.d.set_window_size(1280, 1000)

        # Log out: the session is gone.
        self.get("/admin")
        self.click_and_wait(self.d.find_element(By.CSS_SELECTOR, "#logout button"))
        check(self.d.current_url.endswith("/admin/login"), "logout did not return to the login page")
        check(self.post_raw("/admin/refresh", {"scope": "all"}, cookie) == 403, "the old session still posts after logout")
        self.get("/admin")
        check(self.d.current_url.endswith("/admin/login"), "after logout /admin still opens")
        self.shot("logged-out")

    def close(self):
        self.d.quit()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--admin-token", required=True)
    p.add_argument("--reader-token", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--org", required=True)
    p.add_argument("--other-org", required=True)
    p.add_argument("--zone", default="America/Denver")
    p.add_argument("--script-name", required=True)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    run = Run(args)
    try:
        run.steps()
    except Check as e:
        try:
            run.shot("failure")
        except Exception:
            pass
        print("FAILED: %s (at %s)" % (e, run.d.current_url), flush=True)
        return 1
    finally:
        run.close()
    print("admin browser test: all steps passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
