"""`netspec serve` in a real browser: headless Chromium (Debian's, installed by `make setup`)
driven by Playwright. Load a spec, see the diagram and the table, introduce an error and see
it underlined with its message, fix it and see the diagram update, save, change the file on
disk and see the page follow; and the server's guards (Host, Origin, files by index only).

The expected layers come from netspec.load, not from the page."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import netspec

ROOT = Path(__file__).parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000

pytest.importorskip("starlette", reason="netspec serve needs starlette (netspec[serve])")
pytest.importorskip("uvicorn", reason="netspec serve needs uvicorn (netspec[serve])")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`netspec serve` on two specs in a scratch directory; yields (url, paths)."""
    work = tmp_path_factory.mktemp("serve")
    lenet = work / "lenet5.net"
    lenet.write_text((ROOT / "specs" / "lenet5.net").read_text())
    tiny = work / "tiny.net"
    tiny.write_text((ROOT / "tests" / "specs" / "tiny_resnet_basic.net").read_text())
    proc = subprocess.Popen([sys.executable, "-m", "netspec", "serve", str(lenet), str(tiny),
                             "--no-browser"], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("netspec serve: http://127.0.0.1:"), line + proc.stderr.read()
    url = line.split()[2]
    yield url, lenet, tiny
    proc.terminate()
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


def request(url: str, method: str = "GET", body: dict | None = None,
            headers: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# ---- the server's guards (no browser needed) ------------------------------------------------

def test_binds_127_0_0_1_only(server):
    url, _, _ = server
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    other = [ip for ip in {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None,
                                                                 socket.AF_INET)}
             if not ip.startswith("127.")]
    for ip in other:
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=5).close()


def test_refuses_other_hosts_and_origins(server):
    url, lenet, _ = server
    before = lenet.read_text()
    assert request(url + "api/files", headers={"Host": "evil.example"})[0] == 403
    assert request(url + "api/files", headers={"Origin": "http://evil.example"})[0] == 403
    put = {"Origin": "http://evil.example", "Content-Type": "application/json"}
    assert request(url + "api/files/0", "PUT", {"text": "x"}, put)[0] == 403
    no_origin = {"Content-Type": "application/json"}
    assert request(url + "api/files/0", "PUT", {"text": "x"}, no_origin)[0] == 403
    form = {"Origin": url.rstrip("/"), "Content-Type": "text/plain"}
    assert request(url + "api/files/0", "PUT", {"text": "x"}, form)[0] == 415
    assert lenet.read_text() == before


def test_serves_only_the_files_it_was_given(server):
    url, _, _ = server
    status, body = request(url + "api/files")
    assert status == 200 and [f["name"] for f in json.loads(body)] == ["lenet5.net", "tiny.net"]
    for path in ("api/files/2", "api/files/-1", "api/files/..%2F..%2Fetc%2Fpasswd",
                 "static/..%2F..%2Fserve.py", "static/serve.py", "etc/passwd"):
        assert request(url + path)[0] == 404, path


# ---- in the browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("needs Chromium: make setup installs Debian's chromium with apt")
    playwright = pytest.importorskip("playwright.sync_api",
                                     reason="needs playwright (the test extra)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server[0])
        yield page
        context.close()
        assert errors == [], errors


def layer_names(path: Path) -> list[str]:
    return list(netspec.load(str(path)).graph.nodes)


def test_page_shows_the_diagram_and_the_table(server, page):
    _, lenet, _ = server
    page.wait_for_selector("#diagram svg g.node")
    assert page.locator("#diagram").bounding_box()["height"] > 200  # not squeezed by the table
    expected = layer_names(lenet)
    shown = page.eval_on_selector_all("#diagram g.node", "ns => ns.map(n => n.dataset.layer)")
    assert sorted(shown) == sorted(expected)
    rows = page.eval_on_selector_all("#summary tbody tr", "rs => rs.map(r => r.dataset.name)")
    assert rows == expected
    assert page.text_content("#status") == "ok"
    assert page.input_value("#source") == lenet.read_text()
    assert page.locator("#highlight .t-declaration").first.text_content() == "network"


def test_an_error_is_underlined_with_its_message_and_a_fix_updates_the_diagram(server, page):
    _, lenet, _ = server
    text = lenet.read_text()
    page.fill("#source", text.replace("-> c3: conv(16, k=5)", "-> c3: convv(16, k=5)"))
    mark = page.wait_for_selector("mark.diag.error")
    underlined = page.eval_on_selector_all("mark.diag.error", "ms => ms.map(m => m.textContent)")
    assert "".join(underlined) == "convv(16, k=5)"  # the call's span, token by token
    assert mark.get_attribute("data-message") == "unknown op or block `convv`"
    item = page.text_content("#diagnostics li.error")
    assert "unknown op or block `convv`" in item and "hint: did you mean `conv`?" in item
    assert page.text_content("#status") == "1 error"

    fixed = text.replace("-> f6: linear(84) -> tanh", "-> f6: linear(84) -> tanh -> extra: relu")
    page.fill("#source", fixed)
    page.wait_for_selector('#diagram g.node[data-layer="extra"]')
    assert page.locator("mark.diag").count() == 0
    assert page.locator('#summary tr[data-name="extra"]').count() == 1


def test_clicking_a_layer_selects_its_row_and_headers_sort(server, page):
    page.click('#diagram g.node[data-layer="c5"]')
    assert page.get_attribute('#summary tr[data-name="c5"]', "class") == "selected"
    page.click('#summary th[data-key="params"]')
    first = page.eval_on_selector("#summary tbody tr", "r => r.dataset.name")
    assert first in ("x", "tanh", "s2", "s4", "extra")  # no parameters: sorted first
    page.click('#summary th[data-key="params"]')
    assert page.eval_on_selector("#summary tbody tr", "r => r.dataset.name") == "c5"
    page.click('#summary th[data-key="params"]')  # third click: the spec's order again


def test_the_diagram_zooms_with_the_wheel_and_pans_with_a_drag(server, page):
    def view() -> list[float]:
        return [float(v) for v in page.get_attribute("#diagram svg", "viewBox").split()]

    box = page.locator("#diagram").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = view()
    page.mouse.move(x, y)
    page.mouse.wheel(0, -300)
    page.wait_for_function("w => parseFloat(document.querySelector('#diagram svg')"
                           ".getAttribute('viewBox').split(' ')[2]) < w", arg=before[2])
    zoomed = view()
    assert zoomed[2] < before[2] and zoomed[3] < before[3]
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 50, y + 30)
    page.mouse.up()
    panned = view()
    assert panned[0] < zoomed[0] and panned[1] < zoomed[1] and panned[2] == zoomed[2]


def test_save_writes_the_file_and_a_change_on_disk_reloads_the_page(server, page):
    _, lenet, _ = server
    text = page.input_value("#source")
    page.click("#save")
    page.wait_for_function("() => document.getElementById('status').textContent === 'saved'")
    assert lenet.read_text() == text

    changed = text.replace("network lenet5", "# edited elsewhere\nnetwork lenet5")
    time.sleep(0.05)
    lenet.write_text(changed)
    os.utime(lenet)
    page.wait_for_function("() => document.getElementById('source').value"
                           ".includes('# edited elsewhere')")
    assert page.input_value("#source") == changed


def test_another_spec_side_by_side(server, page):
    _, _, tiny = server
    page.select_option("#compare", "1")
    page.wait_for_selector("#diagram2 svg g.node")
    assert page.locator("#diagram").is_visible() and page.locator("#diagram2").is_visible()
    expected = netspec.analyze(netspec.load(str(tiny))).totals.count.params
    assert page.text_content("#total2").startswith(f"{expected:,} parameters")
    page.select_option("#compare", "")
    assert not page.locator("#diagram2").is_visible()


def test_a_second_spec_with_collapsible_blocks(server, page):
    _, _, tiny = server
    page.select_option("#file", "1")
    page.wait_for_selector('#summary tr.block')
    block = page.eval_on_selector("#summary tr.block", "r => r.dataset.name")
    inside = f'#summary tr[data-name^="{block}."]'
    assert page.locator(inside).count() > 0
    page.click(f'#summary tr[data-name="{block}"] td')
    assert all(not page.locator(inside).nth(k).is_visible()
               for k in range(page.locator(inside).count()))
    assert page.input_value("#source") == tiny.read_text()
