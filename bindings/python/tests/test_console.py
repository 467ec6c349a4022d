"""The web console (`/console/` of `threeport-server`), in a real browser: Debian's headless
Chromium driven through its chromedriver (`./scripts/test` installs both), against a `serve`
process holding objects in every state.

Objects: a runtime that failed (no connection data) with a workload on it; an AWS account with
a sealed secret key; widgets of a kind of one's own reconciled by a Python engine in this test
(reconciled, failed, retrying, interrupted on deletion, and one whose failure a spec change
mends). Screenshots of the overview (1280×800 and phone width) and of a workload instance's
detail go to `<target>/console-screenshots/` (`THREEPORT_SCREENSHOTS` overrides), with
`console-report.txt`: the page weight and the API calls each page makes.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import urllib.request
from typing import Any, Dict, Iterator

import pytest

import threeport
from threeport import Client, Engine

from conftest import _serve, _server_binary

selenium = pytest.importorskip("selenium", reason="./scripts/test installs selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYCONSOLETEST"
WORKLOAD_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: default
data:
  greeting: hello
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-extra
  namespace: default
"""
REPORT: Dict[str, Any] = {"api_calls": {}}


def _indent(text: str, by: int) -> str:
    return "".join(" " * by + line + "\n" for line in text.splitlines())


def _config(key: str, name: str, runtime: str = "") -> str:
    config = f"{key}:\n  Name: {name}\n  YAML: |\n" + _indent(WORKLOAD_YAML.format(name=name), 4)
    if runtime:
        config += f"  KubernetesRuntimeInstance:\n    Name: {runtime}\n"
    return config


def _post_config(base: str, token: str, text: str) -> Dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/v0/configs", data=text.encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def _output_dir() -> pathlib.Path:
    out = os.environ.get("THREEPORT_SCREENSHOTS")
    path = pathlib.Path(out) if out else pathlib.Path(_server_binary()).parents[1] / "console-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Widgets:
    """A kind of one's own, reconciled here: `spec.mode` says how it goes."""

    def __init__(self) -> None:
        self.mended: set = set()

    def reconcile(self, obj: Any) -> None:
        mode = obj.spec.get("mode", "ok")
        if mode == "fail" and obj.name not in self.mended:
            raise threeport.TerminalError(f"widget {obj.name} cannot be built: the mould is cracked")
        if mode == "retry":
            raise RuntimeError("the widget factory does not answer (connection refused)")
        obj.status["built"] = True

    def cleanup(self, obj: Any) -> None:
        if obj.spec.get("mode") == "stuck" and obj.name not in self.mended:
            raise threeport.TerminalError("the widget is welded to the floor: remove it by hand")


@pytest.fixture(scope="module")
def plane() -> Iterator[Dict[str, Any]]:
    """A control plane with objects in every state, and a Python engine reconciling widgets."""
    with _serve() as (base, token):
        client = Client(base, token)
        client.kind_definitions.create("widgets", {
            "kind": "Widget",
            "schema": {"type": "object", "properties": {"mode": {"type": "string"}}},
        })
        widgets = Widgets()
        engine = Engine(url=base, token=token)
        engine.register("Widget", widgets.reconcile, widgets.cleanup, max_retries=1000,
                        backoff_initial=0.2, backoff_max=1.0)
        with engine:
            kind = client.kind("Widget")
            made = {name: kind.create(name, {"mode": mode}) for name, mode in [
                ("w-ok", "ok"), ("w-failed", "fail"), ("w-retrying", "retry"),
                ("w-stuck", "stuck"), ("w-gate", "fail"),
            ]}
            _post_config(base, token, "KubernetesRuntime:\n  Name: edge\n  InfraProvider: kind\n"
                         "  Location: Europe:Paris\n  DefaultRuntime: true\n")
            _post_config(base, token, _config("Workload", "shop", runtime="edge"))
            _post_config(base, token, "AwsAccount:\n  Name: main\n  AccountID: \"123456789012\"\n"
                         "  DefaultRegion: eu-west-3\n  AccessKeyID: AKIACONSOLETEST\n"
                         f"  SecretAccessKey: {SECRET_KEY}\n")
            kind.wait_until(made["w-stuck"].id, lambda o: o.state == "reconciled", timeout=30)
            kind.delete(made["w-stuck"].id)
            for name, state in [("w-ok", "reconciled"), ("w-failed", "creation_failed"),
                                ("w-gate", "creation_failed"), ("w-stuck", "interrupted")]:
                kind.wait_until(made[name].id, lambda o, s=state: o.state == s, timeout=30)
            kind.wait_until(made["w-retrying"].id, lambda o: bool(o.reason), timeout=30)
            runtimes = client.kind("KubernetesRuntimeInstance")
            edge = runtimes.get_by_name("edge")
            runtimes.wait_until(edge.id, lambda o: o.state == "creation_failed", timeout=30)
            yield {"base": base, "token": token, "client": client, "widgets": widgets, "made": made}
    out = _output_dir()
    lines = [f"{key}: {value}" for key, value in REPORT.items() if key != "api_calls"]
    lines += [f"api calls, {page}: {calls}" for page, calls in REPORT["api_calls"].items()]
    (out / "console-report.txt").write_text("\n".join(lines) + "\n")
    print("\nconsole report:\n" + "\n".join(lines))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: Any) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("THREEPORT_CHROMIUM", "/usr/bin/chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,800"):
        options.add_argument(arg)
    service = Service(executable_path=os.environ.get("THREEPORT_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_window_size(1280, 800)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, timeout: float = 15, what: str = "") -> Any:
    # A live page redraws itself: an element found a moment ago may be gone; look again.
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException]).until(condition, what)


def _again_if_redrawn(read: Any) -> Any:
    """Runs `read()`, again if the live page redrew what it found before it was done with it."""
    for attempt in range(5):
        try:
            return read()
        except StaleElementReferenceException:
            if attempt == 4:
                raise


def _click(driver: Any, find: Any, what: str = "") -> None:
    """Clicks what `find(driver)` finds, finding it again if the live page redrew it."""
    _again_if_redrawn(lambda: _wait(driver, find, what=what).click())


def _assert_labelled(driver: Any) -> None:
    """Every field has a label and every button a name (what a screen reader reads out)."""
    unlabelled = driver.execute_script("""
        return [...document.querySelectorAll('main input, main textarea, main select')]
                 .filter(f => f.labels.length === 0).map(f => f.id || f.outerHTML)
          .concat([...document.querySelectorAll('button')]
                 .filter(b => !b.textContent.trim() && !b.getAttribute('aria-label'))
                 .map(b => b.outerHTML));""")
    assert unlabelled == [], unlabelled


def _text_of(driver: Any, css: str) -> str:
    """The text of the first element `css` matches, as the page shows it now."""
    return _again_if_redrawn(lambda: driver.find_element(By.CSS_SELECTOR, css).text)


def _go(driver: Any, plane: Dict[str, Any], hash_: str) -> None:
    """Opens a console page, signing in first if this browser has not (tests run alone too)."""
    signed_in = driver.current_url.startswith(plane["base"]) and driver.execute_script(
        "return sessionStorage.getItem('threeport.token') !== null")
    if not signed_in:
        driver.get(plane["base"] + "/console/")
        _sign_in(driver, plane["token"])
        _wait(driver, lambda d: d.find_elements(By.ID, "h-attention"), what="the overview")
    driver.execute_script("location.hash = arguments[0]", hash_)


def _calls(driver: Any, page: str) -> None:
    REPORT["api_calls"][page] = driver.execute_script("return window.threeportConsole.calls")


def _sign_in(driver: Any, token: str) -> None:
    field = _wait(driver, lambda d: d.find_element(By.ID, "token"), what="the sign-in form")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()


def test_a_wrong_token_is_refused(plane: Dict[str, Any], browser: Any) -> None:
    browser.get(plane["base"] + "/")  # redirects to /console/
    _wait(browser, lambda d: d.current_url.endswith("/console/#/signin"), what="the sign-in page")
    _sign_in(browser, "tp_not_a_token_of_this_plane")
    error = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".signin .error"))
    assert "refused this token" in error.text and "not valid" in error.text
    assert browser.execute_script("return sessionStorage.getItem('threeport.token')") is None
    assert browser.find_element(By.ID, "main-nav").get_attribute("hidden") is not None


def test_sign_in_and_the_overview_shows_what_fails_first(plane: Dict[str, Any], browser: Any) -> None:
    _sign_in(browser, plane["token"])
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#h-attention + * tbody tr"),
          what="the attention table")
    first = _text_of(browser, "#h-attention + * tbody tr")
    assert "w-stuck" in first and "interrupted" in first and "welded" in first, first
    # The first section is the attention list (one read: the live page may redraw in between).
    heading = browser.execute_script(
        "const h = document.querySelector('main h2'); return [h.id, h.textContent];")
    assert heading[0] == "h-attention" and heading[1].startswith("Needs attention"), heading
    rows = _text_of(browser, "#h-attention + *")
    # Interrupted, then failed (the runtime among them), then still retrying.
    assert rows.index("w-stuck") < rows.index("edge") < rows.index("w-retrying"), rows
    assert "retrying (" in rows, rows
    assert "w-ok" not in rows
    runtimes = _text_of(browser, "#h-runtimes + *")
    assert "edge" in runtimes and "creation failed" in runtimes
    workloads = _text_of(browser, "#h-workloads + *")
    assert "shop" in workloads
    _wait(browser, lambda d: d.find_element(By.ID, "live").text == "Live", what="the live stream")
    _calls(browser, "overview")
    # The overview reloads itself; the side bar, whose counts did not change, stays as it was
    # drawn (a redraw under a person's pointer loses their click).
    kinds = _text_of(browser, "#h-kinds + *")
    browser.execute_script("document.querySelector('#kinds-nav details').drawnBefore = true")
    calls = browser.execute_script("return window.threeportConsole.calls")
    _wait(browser, lambda d: d.execute_script("return window.threeportConsole.calls") >= calls + 2,
          what="two reloads of the overview")
    assert _text_of(browser, "#h-kinds + *") == kinds
    assert browser.execute_script(
        "return document.querySelector('#kinds-nav details').drawnBefore === true")
    browser.save_screenshot(str(_output_dir() / "overview.png"))
    # Page weight: the document and what it loaded, as the browser measured them.
    weight = browser.execute_script("""
        const entries = [performance.getEntriesByType('navigation')[0],
                         ...performance.getEntriesByType('resource')];
        const assets = entries.filter(e => !e.name.includes('/v0/'));
        return {bytes: assets.reduce((n, e) => n + (e.decodedBodySize || 0), 0),
                files: assets.length,
                hosts: [...new Set(entries.map(e => new URL(e.name).host))]};
    """)
    REPORT["page weight (bytes, uncompressed)"] = weight["bytes"]
    REPORT["page files"] = weight["files"]
    assert weight["files"] == 3, weight  # the page, its script and its stylesheet
    assert weight["bytes"] < 100_000, weight
    assert weight["hosts"] == [plane["base"].split("//")[1]], weight


def test_a_workload_instance_links_to_its_definition_and_runtime_and_back(
    plane: Dict[str, Any], browser: Any
) -> None:
    _go(browser, plane, "#/kinds/workload-instances")
    _wait(browser, lambda d: d.find_element(By.LINK_TEXT, "shop"), what="the instance list")
    _calls(browser, "list")
    _click(browser, lambda d: d.find_element(By.LINK_TEXT, "shop"))
    _wait(browser, lambda d: "References" in d.find_element(By.ID, "content").text, what="detail")
    related = _text_of(browser, ".related")
    assert "definition: WorkloadDefinition shop" in related, related
    assert "runtime: KubernetesRuntimeInstance edge" in related, related
    assert "Owned by" in related  # the Workload config's root owns it
    assert "Conditions" in _text_of(browser, "main") and "RuntimeReady" in _text_of(browser, "main")
    _calls(browser, "detail")
    browser.save_screenshot(str(_output_dir() / "workload-instance.png"))
    _click(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".related").find_element(By.LINK_TEXT, "edge"))
    _wait(browser, lambda d: "Referenced by" in d.find_element(By.ID, "content").text,
          what="the runtime's back links")
    assert "runtime: WorkloadInstance shop" in _text_of(browser, ".related")
    assert "needs connection data" in _text_of(browser, "main")


def _rows(browser: Any) -> list:
    """The names in the list shown (read in one go: the live page may redraw meanwhile)."""
    return browser.execute_script(
        "return [...document.querySelectorAll('main tbody tr')].map(r => r.cells[0].textContent)")


def test_lists_filter_and_follow_changes(plane: Dict[str, Any], browser: Any) -> None:
    _go(browser, plane, "#/kinds/widgets")
    _wait(browser, lambda d: "w-ok" in _rows(d), what="the widget list")
    browser.execute_script("window.stillTheSamePage = true")
    plane["client"].kind("Widget").create("w-labelled", {"mode": "ok"}, labels={"team": "blue"})
    _wait(browser, lambda d: "w-labelled" in _rows(d), what="a new widget, live")
    assert browser.execute_script("return window.stillTheSamePage") is True
    _assert_labelled(browser)
    name = browser.find_element(By.ID, "f-name")
    name.send_keys("w-ok")
    browser.find_element(By.XPATH, "//button[text()='Filter']").click()
    _wait(browser, lambda d: _rows(d) == ["w-ok"], what="the name filter")
    assert browser.current_url.endswith("#/kinds/widgets?name=w-ok")
    current = browser.find_element(By.CSS_SELECTOR, "#kinds-nav a[aria-current=page]")
    assert current.get_attribute("href").endswith("#/kinds/widgets"), "the side bar marks the kind"
    _go(browser, plane, "#/kinds/widgets")
    label = _wait(browser, lambda d: d.find_element(By.ID, "f-label"))
    label.send_keys("team=blue")
    browser.find_element(By.XPATH, "//button[text()='Filter']").click()
    _wait(browser, lambda d: _rows(d) == ["w-labelled"], what="the label filter")
    _go(browser, plane, "#/kinds/widgets?label=team%3Dred")
    _wait(browser, lambda d: "No object matches." in _text_of(d, "main"), what="an empty match")


def test_secret_and_sealed_values_are_not_shown(plane: Dict[str, Any], browser: Any) -> None:
    _go(browser, plane, "#/kinds/aws-accounts")
    _click(browser, lambda d: d.find_element(By.LINK_TEXT, "main"))
    _wait(browser, lambda d: d.find_element(By.ID, "spec"), what="the account's spec")
    spec = _text_of(browser, "#spec")
    assert '"secret_access_key": "(sealed)"' in spec, spec
    assert SECRET_KEY not in browser.page_source
    assert "sealed:v1:" not in browser.page_source


def test_a_status_change_appears_without_reload(plane: Dict[str, Any], browser: Any) -> None:
    gate = plane["made"]["w-gate"]
    _go(browser, plane, f"#/kinds/widgets/{gate.id}")
    _wait(browser, lambda d: "creation failed" in _text_of(d, "main h1"), what="the failed widget")
    browser.execute_script("window.stillTheSamePage = true")
    # Outside the browser: the spec changes, the engine reconciles, the status is written.
    plane["client"].kind("Widget").patch(gate.id, {"mode": "ok"})
    _wait(browser, lambda d: "reconciled" in _text_of(d, "main h1"), what="the live status change")
    assert browser.execute_script("return window.stillTheSamePage") is True
    assert '"built": true' in _text_of(browser, "#details")


def test_retry_a_failed_object(plane: Dict[str, Any], browser: Any) -> None:
    failed = plane["made"]["w-failed"]
    _go(browser, plane, f"#/kinds/widgets/{failed.id}")
    _wait(browser, lambda d: d.find_element(By.XPATH, "//button[text()='Retry']"))
    plane["widgets"].mended.add("w-failed")  # what a person fixed before retrying
    _click(browser, lambda d: d.find_element(By.XPATH, "//button[text()='Retry']"))
    _wait(browser, lambda d: "reconciled" in _text_of(d, "main h1"), what="the retried widget")
    assert not browser.find_elements(By.XPATH, "//button[text()='Retry']")


def test_retry_an_interrupted_cleanup(plane: Dict[str, Any], browser: Any) -> None:
    stuck = plane["made"]["w-stuck"]
    _go(browser, plane, f"#/kinds/widgets/{stuck.id}")
    _wait(browser, lambda d: "interrupted" in _text_of(d, "main h1"), what="the interrupted widget")
    assert "welded to the floor" in _text_of(browser, "main")
    plane["widgets"].mended.add("w-stuck")
    _click(browser, lambda d: d.find_element(By.XPATH, "//button[text()='Retry']"))
    _wait(browser, lambda d: "gone" in _text_of(d, "main h1"), what="the cleanup, run again")
    with pytest.raises(threeport.NotFound):
        plane["client"].kind("Widget").get(stuck.id)


def _submit(browser: Any, text: str, mode: str) -> str:
    area = browser.find_element(By.ID, "config")
    area.clear()
    # Pasted, as a person would (send_keys types the text).
    browser.execute_script("arguments[0].value = arguments[1]", area, text)
    browser.find_element(By.CSS_SELECTOR, f"#mode option[value={mode}]").click()
    browser.execute_script("document.getElementById('result').replaceChildren()")
    browser.find_element(By.XPATH, "//button[text()='Submit']").click()
    return _wait(browser, lambda d: d.find_element(By.ID, "result").text, what="the result")


def test_create_and_apply_from_a_pasted_config(plane: Dict[str, Any], browser: Any) -> None:
    _go(browser, plane, "#/create")
    _wait(browser, lambda d: d.find_element(By.ID, "config"))
    _assert_labelled(browser)
    _calls(browser, "create (before submitting)")
    config = _config("Workload", "blog", runtime="edge")
    done = _submit(browser, config, "create")
    assert "created WorkloadDefinition blog" in done and "created WorkloadInstance blog" in done, done
    again = _submit(browser, config, "create")
    assert "exists already" in again, again
    applied = _submit(browser, config, "apply")
    assert "unchanged WorkloadDefinition blog" in applied, applied
    broken = _submit(browser, "WorkloadDefinition:\n  Name: x\n  YAMLDocument: /etc/passwd\n", "create")
    assert "reads no file" in broken and "config:3" in broken, broken
    as_json = _submit(browser, json.dumps({"kind": "Widget", "name": "w-json", "spec": {"mode": "ok"}}), "create")
    assert "created Widget w-json" in as_json, as_json
    bad_json = _submit(browser, json.dumps({"kind": "Gadget", "name": "g", "spec": {}}), "create")
    assert "kind" in bad_json and "Gadget" in bad_json, bad_json
    blog = plane["client"].kind("WorkloadDefinition").get_by_name("blog")
    assert "blog-extra" in blog.spec["yaml_document"]


def test_delete_shows_what_the_cascade_removes(plane: Dict[str, Any], browser: Any) -> None:
    made = _post_config(plane["base"], plane["token"], _config("WorkloadDefinition", "cms"))
    definition = made["items"][0]["id"]
    definitions = plane["client"].kind("WorkloadDefinition")
    deadline = time.monotonic() + 30
    while len(definitions.deletion_plan(definition)["deletes"]) < 3:  # it and its two resources
        assert time.monotonic() < deadline, "the definition's resources were never made"
        time.sleep(0.2)
    _go(browser, plane, f"#/kinds/workload-definitions/{definition}")
    _wait(browser, lambda d: "Owns" in d.find_element(By.ID, "content").text, what="its resources")
    _click(browser, lambda d: d.find_element(By.XPATH, "//main//button[text()='Delete']"))
    dialog = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "dialog[open]"), what="confirm")
    cascade = dialog.find_element(By.ID, "cascade").text.splitlines()
    assert cascade[0] == "WorkloadDefinition cms", cascade
    assert sorted(cascade[1:]) == ["WorkloadResourceDefinition cms.0.configmap.cms",
                                   "WorkloadResourceDefinition cms.1.configmap.cms-extra"], cascade
    assert "This deletes 3 objects" in dialog.text
    dialog.find_element(By.ID, "confirm-cancel").click()
    assert not plane["client"].kind("WorkloadDefinition").get(definition).deleting
    _click(browser, lambda d: d.find_element(By.XPATH, "//main//button[text()='Delete']"))
    dialog = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "dialog[open]"))
    dialog.find_element(By.ID, "confirm-ok").click()
    _wait(browser, lambda d: "gone" in _text_of(d, "main h1"), timeout=30, what="the deletion")
    with pytest.raises(threeport.NotFound):
        plane["client"].kind("WorkloadDefinition").get(definition)


def test_the_console_fits_a_phone(plane: Dict[str, Any], browser: Any) -> None:
    browser.set_window_size(390, 844)
    try:
        _go(browser, plane, "#/")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#h-attention + * tbody tr"))
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than the screen"
        browser.save_screenshot(str(_output_dir() / "overview-phone.png"))
        # The kinds fold away behind one line: what needs attention is on the first screen.
        assert browser.find_element(By.CSS_SELECTOR, "#kinds-nav summary").is_displayed()
        nav = browser.find_element(By.ID, "kinds-nav")
        assert not nav.find_element(By.CSS_SELECTOR, "a[href=\"#/kinds/aws-accounts\"]").is_displayed()
        top = browser.execute_script(
            "return document.getElementById('h-attention').getBoundingClientRect().top")
        assert top < 400, f"the attention list starts {top}px down"
        nav.find_element(By.TAG_NAME, "summary").click()
        assert nav.find_element(By.CSS_SELECTOR, "a[href=\"#/kinds/aws-accounts\"]").is_displayed()
    finally:
        browser.set_window_size(1280, 800)


def test_the_page_forbids_other_hosts_and_inline_code(plane: Dict[str, Any]) -> None:
    with urllib.request.urlopen(plane["base"] + "/console/") as response:
        policy = response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script src=\"app.js\"" in page and "http" not in page.split("<body>")[1]
