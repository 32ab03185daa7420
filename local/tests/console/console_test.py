"""The admin console in a real browser (Chromium and chromedriver from Debian's packages,
driven over WebDriver with Selenium), against `flare-local serve` and the real HTTP
gateway and SMTP sinks the Rust test (local/tests/console.rs) starts. Elements are found
by their label text, as a person finds them. Reads its set-up as JSON on stdin; prints
one line per check; exits non-zero on the first failure, saying what it saw."""

import base64
import json
import re
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

CFG = json.load(sys.stdin)
BASE = CFG["base"]
SECRET = "s3cret-" + CFG["tag"]


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = CFG["chromium"]
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1100"):
        o.add_argument(a)
    # Every request the page makes, with its body: a stored password must go in none but
    # the PUT that sets it.
    o.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CFG["chromedriver"]), options=o)


D = browser()


def wait(cond, what, timeout=10):
    try:
        return WebDriverWait(D, timeout, poll_frequency=0.1).until(lambda d: cond())
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}")


def by_label(text):
    """The control a visible <label> with exactly this text is for."""
    labels = [l for l in D.find_elements(By.XPATH, f'//label[normalize-space()="{text}"]') if l.is_displayed()]
    assert labels, f"no visible label reads {text!r}"
    return D.find_element(By.ID, labels[0].get_attribute("for"))


def button(text, within=None):
    root = D.find_element(By.CSS_SELECTOR, within) if within else D
    found = [b for b in root.find_elements(By.XPATH, f'.//button[normalize-space()="{text}"]') if b.is_displayed()]
    assert found, f"no visible button reads {text!r}"
    return found[0]


def tab(name):
    D.find_element(By.XPATH, f'//*[@role="tab"][normalize-space()="{name}"]').click()


def text_of(element_id):
    return D.find_element(By.ID, element_id).text


def fill(label, value):
    el = by_label(label)
    el.clear()
    el.send_keys(value)


def sign_in(token):
    D.get(BASE + "/")
    fill("Token", token)
    button("Sign in").click()


def signed_in():
    return D.find_element(By.ID, "console").is_displayed()


def requests_made():
    """Every request the page sent since the last call: (method, url, body)."""
    out = []
    for entry in D.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        if m.get("method") == "Network.requestWillBeSent":
            r = m["params"]["request"]
            out.append((r["method"], r["url"], r.get("postData", "")))
    return out


def check(name, fn):
    started = time.monotonic()
    fn()
    print(f"ok - {name} ({time.monotonic() - started:.1f} s)", flush=True)


# ------------------------------------------------------------------ the checks

def bad_token():
    sign_in("not-a-token")
    wait(lambda: text_of("sign-in-message") != "", "the sign-in message")
    msg = text_of("sign-in-message")
    assert "not accepted" in msg, msg
    assert not signed_in()


def good_token():
    sign_in(CFG["admin"])
    wait(signed_in, "the console after signing in")
    assert "acme" in text_of("who"), text_of("who")
    requests_made()  # from here on, every request is looked at


def keyboard_tabs():
    D.find_element(By.XPATH, '//*[@role="tab"][normalize-space()="Outgoing SMS"]').send_keys(Keys.ARROW_RIGHT)
    wait(lambda: D.find_element(By.ID, "panel-email").is_displayed(), "the email tab by the arrow key")
    assert D.switch_to.active_element.text == "Outgoing Email"
    D.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    wait(lambda: D.find_element(By.ID, "panel-sms").is_displayed(), "the SMS tab by the arrow key")


def validation_error_beside_its_field():
    tab("Outgoing SMS")
    Select(by_label("Control Center")).select_by_value("main")
    Select(by_label("Provider")).select_by_visible_text("HTTP gateway")
    assert by_label("Gateway URL").is_displayed()
    fill("Gateway URL", CFG["gateway_url"])
    fill("Username", "acct-17")
    fill("Password", SECRET)
    fill("Http Header", "X-Api-Key: hdr-" + CFG["tag"])
    fill("Sender number", "not a number!")
    button("Save", "#sms-form").click()
    wait(lambda: "Not saved" in text_of("sms-message"), "the save to be refused")
    err = D.find_element(By.CSS_SELECTOR, '[data-error-for="sender_number"]')
    assert err.text, "no error beside Sender number"
    assert by_label("Sender number").get_attribute("aria-invalid") == "true"
    # Nothing typed is lost.
    assert by_label("Gateway URL").get_attribute("value") == CFG["gateway_url"]
    assert by_label("Password").get_attribute("value") == SECRET
    assert by_label("Username").get_attribute("value") == "acct-17"


def save_sms_for_main():
    fill("Sender number", "ACMEFIRE")
    button("Save", "#sms-form").click()
    wait(lambda: "Saved" in text_of("sms-message"), "the SMS settings to be saved")
    assert "set" in text_of("sms-password-state")
    assert by_label("Password").get_attribute("value") == ""
    assert by_label("Http Header").get_attribute("value") == "X-Api-Key: ****"


def save_sms_for_a_new_control_center():
    fill("New control center", "north")
    button("Add control center").click()
    wait(lambda: Select(by_label("Control Center")).first_selected_option.get_attribute("value") == "north", "north selected")
    assert "main's settings" in text_of("sms-origin"), text_of("sms-origin")
    Select(by_label("Provider")).select_by_visible_text("Amazon SNS")
    assert not by_label_visible("Gateway URL"), "a gateway field shown for SNS"
    fill("Sender number", "+15551230000")
    button("Save", "#sms-form").click()
    wait(lambda: "Saved the SMS settings of north" in text_of("sms-message"), "north saved")


def by_label_visible(text):
    return any(l.is_displayed() for l in D.find_elements(By.XPATH, f'//label[normalize-space()="{text}"]'))


def reload_and_see_them():
    D.refresh()
    wait(signed_in, "the console after a reload (the token kept for the session)")
    Select(by_label("Control Center")).select_by_value("main")
    assert Select(by_label("Provider")).first_selected_option.text == "HTTP gateway"
    assert by_label("Gateway URL").get_attribute("value") == CFG["gateway_url"]
    assert by_label("Sender number").get_attribute("value") == "ACMEFIRE"
    Select(by_label("Control Center")).select_by_value("north")
    assert Select(by_label("Provider")).first_selected_option.text == "Amazon SNS"
    assert by_label("Sender number").get_attribute("value") == "+15551230000"
    Select(by_label("Control Center")).select_by_value("main")


def sms_length_settings_and_a_test_with_a_sample():
    tab("Outgoing SMS")
    Select(by_label("Control Center")).select_by_value("main")
    # The defaults, as GET answers them for settings saved without them.
    assert by_label("Smart encoding").is_selected(), "Smart encoding is off by default"
    assert by_label("Max segments").get_attribute("value") == "3", by_label("Max segments").get_attribute("value")
    by_label("Smart encoding").click()
    fill("Max segments", "2")
    button("Save", "#sms-form").click()
    wait(lambda: "Saved the SMS settings of main" in text_of("sms-message"), "smart encoding off and 2 segments saved")
    D.refresh()
    wait(signed_in, "the console after a reload")
    Select(by_label("Control Center")).select_by_value("main")
    assert not by_label("Smart encoding").is_selected(), "Smart encoding back on after a reload"
    assert by_label("Max segments").get_attribute("value") == "2", by_label("Max segments").get_attribute("value")
    # Over the cap of 10: refused, the reason beside the field, what was typed kept.
    fill("Max segments", "11")
    button("Save", "#sms-form").click()
    wait(lambda: "Not saved" in text_of("sms-message"), "11 segments refused")
    err = D.find_element(By.CSS_SELECTOR, '[data-error-for="max_segments"]')
    assert err.text and err.is_displayed(), "no error beside Max segments"
    assert by_label("Max segments").get_attribute("aria-invalid") == "true"
    assert err.get_attribute("id") in by_label("Max segments").get_attribute("aria-describedby").split()
    assert by_label("Max segments").get_attribute("value") == "11"
    # Back to the defaults, then a sample with a curly apostrophe: sent as a plain one,
    # so GSM-7 and one segment, not UCS-2.
    by_label("Smart encoding").click()
    fill("Max segments", "3")
    button("Save", "#sms-form").click()
    wait(lambda: "Saved the SMS settings of main" in text_of("sms-message"), "the defaults saved again")
    assert by_label("Smart encoding").is_selected()
    assert by_label("Max segments").get_attribute("value") == "3"
    fill("To", "+14155550100")
    fill("Sample message", "L\u2019\u00e9quipe arrive")
    button("Send test", "#sms-test").click()
    wait(lambda: text_of("sms-test-result") not in ("", "Working…"), "the sample's test send")
    result = text_of("sms-test-result")
    assert "Sent through http" in result, result
    assert re.search(r"\bGSM-7, 1 segment(?!s)", result), result
    wait(lambda: D.find_element(By.ID, "sms-test-sent").is_displayed(), "the text sent")
    sent = text_of("sms-test-sent")
    assert "L'\u00e9quipe arrive" in sent and "\u2019" not in sent, sent


def password_never_in_the_page_or_other_requests():
    assert SECRET not in D.page_source
    # The saves that set it (the one refused for the sender number, and the one that
    # stored it) carry it; no read, test send or other save does.
    carrying = [(m, u) for m, u, body in requests_made() if SECRET in body or SECRET in u]
    puts = [(m, u) for m, u in carrying if m == "PUT" and u.endswith("/v1/settings/sms/main")]
    assert carrying == puts and len(puts) == 2, f"requests carrying the password: {carrying}"


def test_send_success_and_failure():
    tab("Outgoing SMS")
    fill("To", "+14155550100")
    button("Send test", "#sms-test").click()
    wait(lambda: text_of("sms-test-result") != "" and "Working" not in text_of("sms-test-result"), "the test send's answer")
    assert "Sent through http" in text_of("sms-test-result"), text_of("sms-test-result")
    post(CFG["gateway_script"], {"path": CFG["gateway_path"], "responses": [{"status": 400, "body": {"error": "bad number"}}]})
    button("Send test", "#sms-test").click()
    wait(lambda: "Sent through" not in text_of("sms-test-result") and "Working" not in text_of("sms-test-result"), "the failed test send's answer")
    assert "bad number" in text_of("sms-test-result") or "400" in text_of("sms-test-result"), text_of("sms-test-result")
    # Email through the SMTP sink, then through a port nobody listens on.
    tab("Outgoing Email")
    Select(by_label("Provider")).select_by_visible_text("SMTP server")
    fill("Sender Email Address", "alerts@acme.example")
    fill("SMTP Server URL", "127.0.0.1")
    fill("SMTP Server Port", str(CFG["smtp_port"]))
    fill("SMTP Username", CFG["smtp_user"])
    fill("SMTP User Password", CFG["smtp_password"])
    button("Save", "#email-form").click()
    wait(lambda: "Saved" in text_of("email-message"), "the email settings to be saved")
    fill("To", f"console-{CFG['tag']}@acme.example")
    button("Send test", "#email-test").click()
    wait(lambda: text_of("email-test-result") not in ("", "Working…"), "the email test's answer")
    assert "Sent through smtp" in text_of("email-test-result"), text_of("email-test-result")
    # Another server (a port): the stored password is not sent to it unless entered again.
    fill("SMTP Server Port", str(CFG["closed_port"]))
    button("Save", "#email-form").click()
    wait(lambda: "Not saved" in text_of("email-message"), "the move without the password refused")
    err = D.find_element(By.CSS_SELECTOR, '[data-error-for="smtp.password"]')
    assert "re-enter the password" in err.text, err.text
    fill("SMTP User Password", CFG["smtp_password"])
    button("Save", "#email-form").click()
    wait(lambda: "Saved" in text_of("email-message"), "the broken email settings to be saved")
    button("Send test", "#email-test").click()
    wait(lambda: text_of("email-test-result") not in ("", "Working…") and "Sent through" not in text_of("email-test-result"), "the failed email test's answer")
    assert "HTTP 502" in text_of("email-test-result") or "smtp" in text_of("email-test-result").lower(), text_of("email-test-result")


def communication_saved_and_read_back():
    tab("Communication")
    Select(by_label("Dispatch")).select_by_visible_text("Mobile App, SMS and Email")
    Select(by_label("Messages")).select_by_visible_text("Via the Mobile App Only")
    if not by_label("Manual SMS").is_selected():
        by_label("Manual SMS").click()
    fill("App fallback (seconds)", "45")
    # A blank at the end is refused, naming the field; then saved as typed.
    fill("SMS help text", "Acme alerts. Reply STOP to opt out. ")
    button("Save", "#communication-form").click()
    wait(lambda: "Not saved" in text_of("communication-message"), "the help text with a trailing blank refused")
    err = D.find_element(By.CSS_SELECTOR, '[data-error-for="sms_help_text"]')
    assert "space" in err.text, err.text
    fill("SMS help text", "Acme alerts. Reply STOP to opt out.")
    button("Save", "#communication-form").click()
    wait(lambda: "Saved" in text_of("communication-message"), "the communication settings to be saved")
    D.refresh()
    wait(signed_in, "the console after a reload")
    tab("Communication")
    assert Select(by_label("Dispatch")).first_selected_option.text == "Mobile App, SMS and Email"
    assert Select(by_label("Messages")).first_selected_option.text == "Via the Mobile App Only"
    assert by_label("Manual SMS").is_selected()
    assert by_label("App fallback (seconds)").get_attribute("value") == "45"
    assert by_label("SMS help text").get_attribute("value") == "Acme alerts. Reply STOP to opt out."


def token_sub(token):
    """The `sub` of a JWT (its payload, unverified), as the audit trail names people."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


def column(table_id, header):
    """Every row's text under the column headed `header`, as rendered (innerText), read
    in one request: a cell at a time is two WebDriver requests a row, 20 s for a
    500-row page."""
    headers = [th.text for th in D.find_elements(By.CSS_SELECTOR, f"#{table_id} thead th")]
    at = headers.index(header)
    return D.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'),"
        " tr => tr.cells[arguments[1]].innerText.trim());", table_id, at)


def audit_filtered(what):
    """Filter pressed: waits for the table's answer, the summary naming the filter."""
    button("Filter", "#panel-audit").click()
    wait(lambda: D.find_element(By.ID, "audit-list").get_attribute("aria-busy") != "true"
         and what in text_of("audit-message"), f"the trail filtered by {what}")


def the_audit_trail_shows_the_changes_and_verifies():
    tab("Audit")
    wait(lambda: D.find_element(By.ID, "panel-audit").is_displayed(), "the Audit tab")
    wait(lambda: "newest first" in text_of("audit-message"), "the audit trail")
    # The saves of main's SMS settings: each field before and after; a secret only in a word.
    rows = list(zip(column("audit-list", "Target"), column("audit-list", "Changes")))
    main = [changes for target, changes in rows if target == "/v1/settings/sms/main"]
    assert any(re.search(r"^[\w.]+: .+ → .+$", changes, re.M) for changes in main), rows
    assert any(re.search(r"^password: (set|changed)$", changes, re.M) for changes in main), rows
    # Nor any stored secret: the SMS gateway's password and header value, the SMTP password.
    for secret in (SECRET, "hdr-" + CFG["tag"], CFG["smtp_password"]):
        assert secret not in D.page_source, "a stored secret on the page"
    # By person: the admin's own entries.
    admin = token_sub(CFG["admin"])
    fill("Person", admin)
    audit_filtered(f"person {admin}")
    who = column("audit-list", "Who")
    assert who and set(who) == {admin}, who
    # By target: only the communication settings' entries (the refused save and the saved one).
    fill("Person", "")
    fill("Target", "/v1/settings/communication")
    audit_filtered("target /v1/settings/communication")
    targets = column("audit-list", "Target")
    assert targets and set(targets) == {"/v1/settings/communication"}, targets
    outcomes = column("audit-list", "Outcome")
    assert any(o.startswith("✓ 200") for o in outcomes) and any(o.startswith("✗ 400") for o in outcomes), outcomes
    button("Verify chain").click()
    wait(lambda: text_of("audit-verify-result").startswith("Chain"), "the chain's verdict")
    verdict = text_of("audit-verify-result")
    assert re.fullmatch(r"Chain intact \(\d+ entries\)\.", verdict), verdict


def a_notification_reaches_no_pending():
    # Email back through the sink, so every channel can finish.
    tab("Outgoing Email")
    fill("SMTP Server Port", str(CFG["smtp_port"]))
    # Another server again: the password with it.
    fill("SMTP User Password", CFG["smtp_password"])
    button("Save", "#email-form").click()
    wait(lambda: "Saved" in text_of("email-message"), "the email settings to be saved again")
    answer = post(BASE + "/local/events", CFG["event"])
    tab("Notifications")
    wait(lambda: len(D.find_elements(By.CSS_SELECTOR, "#notifications-list tbody tr")) > 0, "the notification in the list")
    D.find_element(By.XPATH, f'//button[@aria-label="Show notification {answer["notification_id"]}"]').click()
    wait(lambda: "Nothing is pending" in text_of("notification-summary"), "no delivery pending", timeout=20)
    rows = {}
    for tr in D.find_elements(By.CSS_SELECTOR, "#notification-deliveries tbody tr"):
        cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        rows[(cells[0], cells[1])] = cells
    sms = rows[("u-console", "sms")]
    email = rows[("u-console", "email")]
    push = rows[("u-console", "push")]
    assert sms[2] == "✓ sent" and sms[5] == "http", sms
    assert email[2] == "✓ sent" and email[5] == "smtp", email
    assert push[2] == "– skipped" and push[3] == "no_device", push
    # The SMS's segments and encoding, and the notification's total of them.
    segments_at = [th.text for th in D.find_elements(By.CSS_SELECTOR, "#notification-deliveries thead th")].index("Segments")
    m = re.fullmatch(r"(\d+) \((GSM-7|UCS-2)\)", sms[segments_at])
    assert m and int(m.group(1)) >= 1, sms
    assert email[segments_at] == "" and push[segments_at] == "", (email, push)
    summary = text_of("notification-summary")
    assert f"SMS segments: {m.group(1)}." in summary, summary
    # The responder answers (as their app would): the Response column says it, and the
    # list counts them.
    post(BASE + f"/v1/notifications/{answer['notification_id']}/response", {"response": "responding"},
         CFG["responder"])
    D.find_element(By.XPATH, f'//button[@aria-label="Show notification {answer["notification_id"]}"]').click()
    wait(lambda: cell_under("notification-deliveries", "Response", 0).startswith("Responding (in the app"),
         "the answer in the Response column")
    button("Refresh").click()
    wait(lambda: cell_under("notifications-list", "Responding", 0) == "1", "one responding in the list")
    assert cell_under("notifications-list", "Unavailable", 0) == "0"
    assert cell_under("notifications-list", "SMS segments", 0) == m.group(1), cell_under("notifications-list", "SMS segments", 0)


def a_large_notification_is_shown_a_page_at_a_time():
    # 501 recipients nobody knows: every delivery ends at once (unknown_user).
    event = json.loads(json.dumps(CFG["event"]))
    event["id"] = CFG["tag"] + "-large"
    event["detail"]["recipient_ids"] = [f"x-{i:04}" for i in range(501)]
    answer = post(BASE + "/local/events", event)
    button("Refresh").click()
    wait(lambda: D.find_elements(By.XPATH, f'//button[@aria-label="Show notification {answer["notification_id"]}"]'),
         "the large notification in the list")
    D.find_element(By.XPATH, f'//button[@aria-label="Show notification {answer["notification_id"]}"]').click()
    wait(lambda: "Recipients page 1" in text_of("notification-summary"), "its first page")
    first = set(column("notification-deliveries", "Recipient"))
    assert len(first) == 500, len(first)
    assert not [b for b in D.find_elements(By.XPATH, '//button[normalize-space()="Previous recipients"]') if b.is_displayed()]
    button("Next recipients").click()
    wait(lambda: "Recipients page 2" in text_of("notification-summary"), "its second page")
    second = set(column("notification-deliveries", "Recipient"))
    assert second == {"x-0500"}, second
    assert not [b for b in D.find_elements(By.XPATH, '//button[normalize-space()="Next recipients"]') if b.is_displayed()]
    button("Previous recipients").click()
    wait(lambda: "Recipients page 1" in text_of("notification-summary"), "back on the first page")


def a_dispatcher_sees_but_cannot_save():
    button("Sign out").click()
    sign_in(CFG["dispatcher"])
    wait(signed_in, "the dispatcher's console")
    # The audit trail is for administrators: no Audit tab.
    assert not [t for t in D.find_elements(By.XPATH, '//*[@role="tab"][normalize-space()="Audit"]')
                if t.is_displayed()], "an Audit tab for a dispatcher"
    tab("Outgoing SMS")
    assert by_label("Sender number").get_attribute("value") == "ACMEFIRE"
    fill("Sender number", "ACMEFIRE2")
    button("Save", "#sms-form").click()
    wait(lambda: "role" in text_of("sms-message"), "the refusal")
    assert "administrator" in text_of("sms-message"), text_of("sms-message")
    assert by_label("Sender number").get_attribute("value") == "ACMEFIRE2"


def cell_under(table_id, header, row):
    """The text of row `row`'s cell under the column headed `header`, as a person reads
    the table."""
    headers = [th.text for th in D.find_elements(By.CSS_SELECTOR, f"#{table_id} thead th")]
    rows = D.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    if len(rows) <= row:
        return ""
    return rows[row].find_elements(By.TAG_NAME, "td")[headers.index(header)].text


def post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer " + (token or CFG["admin"])})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return json.loads(text) if text else None


def screenshots():
    for name in ("Outgoing SMS", "Outgoing Email", "Communication", "Notifications", "Audit"):
        tab(name)
        D.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.2)
        D.save_screenshot(f"{CFG['screenshots']}/console-{name.lower().replace(' ', '-')}.png")


try:
    check("a bad token is refused with a sentence", bad_token)
    check("a printed token signs in", good_token)
    check("the tabs work from the keyboard", keyboard_tabs)
    check("a validation error is shown beside its field, nothing typed lost", validation_error_beside_its_field)
    check("SMS settings saved for main", save_sms_for_main)
    check("SMS settings saved for a new control center", save_sms_for_a_new_control_center)
    check("after a reload both are shown", reload_and_see_them)
    check("smart encoding and max segments saved, refused beside the field, and a sample sent as GSM-7",
          sms_length_settings_and_a_test_with_a_sample)
    check("test sends: SMS and email, success and failure", test_send_success_and_failure)
    check("the password is in no page and no request but its PUT", password_never_in_the_page_or_other_requests)
    check("communication settings saved and read back", communication_saved_and_read_back)
    check("the audit trail: changes before and after, no secret, filtered by person and target, chain intact",
          the_audit_trail_shows_the_changes_and_verifies)
    check("an incident's notification reaches no pending in the Notifications view", a_notification_reaches_no_pending)
    check("a notification of 501 recipients is shown 500 at a time", a_large_notification_is_shown_a_page_at_a_time)
    if CFG.get("screenshots"):
        check("screenshots", screenshots)
    check("a dispatcher sees the settings but cannot save them", a_dispatcher_sees_but_cannot_save)
except AssertionError as e:
    print(f"not ok - {e}", flush=True)
    print(f"page URL {D.current_url}; visible text:\n{D.find_element(By.TAG_NAME, 'body').text}", flush=True)
    sys.exit(1)
finally:
    D.quit()
