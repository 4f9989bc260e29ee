"""`netspec serve` in a real browser: headless Chromium (Debian's, installed by `make setup`)
driven by Playwright. Load a spec, see the diagram and the table, introduce an error and see
it underlined with its message, fix it and see the diagram update, save, change the file on
disk and see the page follow; and the server's guards (Host, Origin, files by index only).

The expected layers come from netspec.load, not from the page."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
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


def test_a_bundled_spec_by_name_is_served_read_only(tmp_path):
    from netspec.specfiles import resolve

    bundled = Path(resolve("lenet5"))
    before = bundled.read_text()
    proc = subprocess.Popen([sys.executable, "-m", "netspec", "serve", "lenet5",
                             "--no-browser"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[2]
        (entry,) = json.loads(request(url + "api/files")[1])
        assert entry["name"] == "lenet5.net" and entry["writable"] is False
        assert json.loads(request(url + "api/files/0")[1])["text"] == before
        headers = {"Origin": url.rstrip("/"), "Content-Type": "application/json"}
        status, body = request(url + "api/files/0", "PUT", {"text": "x"}, headers)
        assert status == 403 and "read-only" in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert bundled.read_text() == before


def test_without_no_browser_the_users_browser_is_opened_on_the_page(tmp_path):
    """Python's webbrowser honours $BROWSER: a script stands in for the user's browser and
    records the address it is given."""
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    browser.chmod(0o755)
    env = {**os.environ, "BROWSER": f"{browser} %s"}
    proc = subprocess.Popen([sys.executable, "-m", "netspec", "serve", "lenet5"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[2]
        deadline = time.monotonic() + 30
        while not (opened.exists() and opened.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text() == url
        assert request(url)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


# ---- the editor's bundle (no browser needed) ---------------------------------------------------

WEB = ROOT / "editors" / "web"


def test_the_editors_token_rules_are_the_generated_ones():
    from netspec.highlight import codemirror_json

    assert (WEB / "src" / "tokens.json").read_text() == codemirror_json(), \
        "run: python -m netspec.highlight codemirror > editors/web/src/tokens.json"


def test_the_committed_editor_bundle_is_rebuilt_from_the_lock_file(tmp_path):
    """netspec/web/editor.js is committed (pip install needs no npm); it must be what
    editors/web builds from its package-lock.json, byte for byte."""
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "esbuild").is_dir():
        pytest.skip("needs node and editors/web/node_modules (make setup installs them with "
                    "apt and npm ci)")
    out = tmp_path / "editor.js"
    subprocess.run([node, str(WEB / "build.mjs"), str(out)], check=True, timeout=120,
                   capture_output=True)
    committed = (ROOT / "netspec" / "web" / "editor.js").read_bytes()
    assert out.read_bytes() == committed, \
        "run: cd editors/web && npm ci && npm run build, and commit netspec/web/editor.js"
    lock = json.loads((WEB / "package-lock.json").read_text())
    package = json.loads((WEB / "package.json").read_text())
    for name, version in package["devDependencies"].items():  # pinned exactly
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name


def test_the_page_loads_the_bundle_and_nothing_else(server):
    url = server[0]
    status, page = request(url)
    assert status == 200
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts == ["/static/editor.js", "/static/app.js"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    status, bundle = request(url + "static/editor.js")
    assert status == 200 and bundle == (ROOT / "netspec" / "web" / "editor.js").read_text()


# ---- in the browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    """The page in headless Chromium, every request that leaves 127.0.0.1 blocked and
    recorded (the page must work offline: the editor is bundled, nothing is fetched)."""
    if CHROMIUM is None:
        pytest.skip("needs Chromium: make setup installs Debian's chromium with apt")
    playwright = pytest.importorskip("playwright.sync_api",
                                     reason="needs playwright (the test extra)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS)
        external: list[str] = []

        def only_this_server(route):
            if urllib.parse.urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                external.append(route.request.url)
                route.abort()

        context.route("**/*", only_this_server)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # console errors too: a script or style the content security policy refused
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server[0])
        yield page
        context.close()
        assert errors == [], errors
        assert external == [], external


def layer_names(path: Path) -> list[str]:
    return list(netspec.load(str(path)).graph.nodes)


def editor_text(page) -> str:
    return page.evaluate("() => state.editor.text()")


def type_at(page, offset: int, keys: str = "", backspaces: int = 0) -> None:
    """Put the editor's cursor at `offset` and type there with the keyboard."""
    page.evaluate("at => { state.editor.view.dispatch({selection: {anchor: at}});"
                  " state.editor.view.focus(); }", offset)
    for _ in range(backspaces):
        page.keyboard.press("Backspace")
    if keys:
        page.keyboard.type(keys)


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
    assert editor_text(page) == lenet.read_text()


def test_the_editor_is_codemirror_highlighting_by_the_grammars_classes(server, page):
    _, lenet, _ = server
    page.wait_for_selector(".cm-editor .cm-content .t-declaration")
    assert page.locator(".cm-content .t-declaration").first.text_content() == "network"
    assert page.locator(".cm-content .t-arrow").first.text_content() == "->"
    first_comment = next(line.strip() for line in lenet.read_text().splitlines()
                         if line.strip().startswith("#"))
    assert page.locator(".cm-content .t-comment").first.text_content() == first_comment


def test_the_editors_tokenizer_agrees_with_the_parser_on_every_bundled_spec(page):
    """The editor's tokenizer, run in the browser from the shipped bundle, against the
    parser's own lexer: the same tokens with the same classes."""
    from netspec.highlight import token_classes
    from netspec.parser import lex

    classes = {name: cls for name, _, cls in token_classes()}
    specs = sorted((ROOT / "specs").rglob("*.net")) + sorted((ROOT / "tests" / "specs").glob("*.net"))
    texts = [p.read_text() for p in specs]
    tokenized = page.evaluate("ts => ts.map(t => NetspecEditor.tokens(t))", texts)
    for path, text, tokens in zip(specs, texts, tokenized, strict=True):
        expected = []
        for t in lex(text):
            if t.type == "LABEL_OPEN":  # `name{` of a computed label: a name and a brace
                expected += [[t.start_pos, t.end_pos - 1, "name"],
                             [t.end_pos - 1, t.end_pos, "punctuation"]]
            elif t.type != "WS":
                expected.append([t.start_pos, t.end_pos, classes[t.type]])
        assert tokens == expected, path.name


def test_an_error_is_underlined_with_its_message_and_a_fix_updates_the_diagram(server, page):
    _, lenet, _ = server
    text = editor_text(page)
    at = text.index("conv(16, k=5)") + len("conv")
    type_at(page, at, "v")  # c3: convv(16, k=5)
    page.wait_for_selector(".cm-lintRange-error")
    underlined = page.eval_on_selector_all(".cm-lintRange-error",
                                           "ms => ms.map(m => m.textContent).join('')")
    assert underlined == "convv(16, k=5)"  # the call's span
    assert page.locator(".cm-gutter-lint .cm-lint-marker-error").count() == 1
    page.hover(".cm-lintRange-error")
    tooltip = page.wait_for_selector(".cm-tooltip-lint .cm-diagnostic-error")
    assert tooltip.text_content() == "unknown op or block `convv`hint: did you mean `conv`?"
    item = page.text_content("#diagnostics li.error")
    assert "unknown op or block `convv`" in item and "hint: did you mean `conv`?" in item
    assert page.text_content("#status") == "1 error"
    assert page.title().startswith("● lenet5.net")

    type_at(page, at + 1, backspaces=1)  # the fix, with the keyboard
    page.wait_for_function("() => document.getElementById('status').textContent === 'ok'")
    assert page.locator(".cm-lintRange").count() == 0
    tanh = editor_text(page).index("-> f6: linear(84) -> tanh") + len("-> f6: linear(84) -> tanh")
    type_at(page, tanh, " -> extra: relu")
    page.wait_for_selector('#diagram g.node[data-layer="extra"]')
    assert page.locator('#summary tr[data-name="extra"]').count() == 1
    assert editor_text(page) == text.replace("-> f6: linear(84) -> tanh",
                                             "-> f6: linear(84) -> tanh -> extra: relu")
    assert lenet.read_text() == text  # not saved yet


def test_hovering_a_layer_in_the_editor_shows_its_shape_parameters_and_macs(page):
    page.wait_for_function("() => state.checked === state.editor.text()")  # rows are this text's
    text = editor_text(page)
    at = text.index("c3: conv(") + len("c3: ") + 1  # inside `conv`
    box = page.evaluate("at => { const c = state.editor.view.coordsAtPos(at);"
                        " return {x: (c.left + c.right) / 2 + 2, y: (c.top + c.bottom) / 2}; }",
                        at)
    page.mouse.move(box["x"], box["y"])
    info = page.wait_for_selector(".cm-tooltip .layer-info").text_content()
    params = 16 * (6 * 5 * 5 + 1)  # 16 filters of 6x5x5 and a bias each
    macs = 16 * 10 * 10 * 6 * 5 * 5  # a 10x10 output grid, each a 6x5x5 dot product
    assert info == (f"c3 conv 5x5, 16: output [16, 10, 10], {params:,} parameters, "
                    f"{macs:,} MACs, receptive field 14")  # c1 5, s2 6, c3 6 + (5 - 1) * 2
    page.mouse.move(0, 0)


def test_clicking_a_layer_selects_its_row_shows_its_source_and_headers_sort(server, page):
    page.click('#diagram g.node[data-layer="c5"]')
    assert page.get_attribute('#summary tr[data-name="c5"]', "class") == "selected"
    span = netspec.load(str(server[1])).graph.nodes["c5"]["span"]
    assert page.evaluate("() => state.editor.cursor()") == {"line": span.line,
                                                           "column": span.col}
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
    text = editor_text(page)
    assert "-> extra: relu" in text  # typed by the test above
    page.locator(".cm-content").click()
    page.keyboard.press("Control+s")
    page.wait_for_function("() => document.getElementById('status').textContent === 'saved'")
    assert lenet.read_text() == text
    assert not page.title().startswith("●")
    assert page.locator("#save").is_disabled()

    changed = text.replace("network lenet5", "# edited elsewhere\nnetwork lenet5")
    time.sleep(0.05)
    lenet.write_text(changed)
    os.utime(lenet)
    page.wait_for_function("() => state.editor.text().includes('# edited elsewhere')")
    assert editor_text(page) == changed
    page.wait_for_selector(".cm-content .t-comment >> text=# edited elsewhere")


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
    # the block's row shows the block's call in the editor
    call = next(f.span for _, d in netspec.load(str(tiny)).graph.nodes(data=True)
                for f in d["path"] if f.instance == block)
    assert page.evaluate("() => state.editor.cursor()") == {"line": call.line,
                                                           "column": call.col}
    assert editor_text(page) == tiny.read_text()


def test_format_rewrites_the_text_in_fmts_style_and_undo_takes_it_back(server, page):
    from netspec.fmt import format_text

    messy = "network n{input x:[4]\n  output x->linear(2)}\n"
    page.evaluate("t => state.editor.replace(t)", messy)
    page.wait_for_function("() => document.getElementById('status').textContent === 'ok'")
    page.click("#format")
    page.wait_for_function("() => document.getElementById('status').textContent"
                           " === 'formatted'")
    assert editor_text(page) == format_text(messy)
    page.locator(".cm-content").click()
    page.keyboard.press("Control+z")
    assert editor_text(page) == messy


def test_format_refuses_a_spec_that_does_not_parse(server):
    url = server[0]
    headers = {"Origin": url.rstrip("/"), "Content-Type": "application/json"}
    status, body = request(url + "api/files/0/format", "POST", {"text": "network n {"}, headers)
    assert status == 422 and "unexpected" in json.loads(body)["error"]
    status, body = request(url + "api/files/0/format", "POST", {"text": "network n{input x:[4]"
                                                                " output x}"}, headers)
    assert status == 200 and json.loads(body)["text"] == \
        "network n {\n    input x: [4]\n    output x\n}\n"
    evil = {"Origin": "http://evil.example", "Content-Type": "application/json"}
    assert request(url + "api/files/0/format", "POST", {"text": "x"}, evil)[0] == 403


def test_a_block_library_is_checked_as_a_library(server):
    url = server[0]
    headers = {"Origin": url.rstrip("/"), "Content-Type": "application/json"}
    library = (ROOT / "specs" / "blocks" / "resnet.net").read_text()
    status, body = request(url + "api/files/0/check", "POST", {"text": library}, headers)
    answer = json.loads(body)
    assert status == 200 and answer["ok"] and answer["diagnostics"] == []
    assert answer["title"] == "library: basic, bottleneck" and answer["rows"] == []


def test_completion_offers_op_names_and_a_calls_argument_names(page):
    page.wait_for_selector("#diagram svg g.node")  # the page has loaded its file
    page.evaluate("t => state.editor.replace(t)",
                  "network n {\n    input x: [3, 8, 8]\n    output x -> \n}\n")
    at = editor_text(page).index("-> \n") + 3
    type_at(page, at, "maxp")
    option = page.wait_for_selector(".cm-tooltip-autocomplete li[aria-selected] .cm-completionLabel")
    assert option.text_content() == "maxpool"
    page.keyboard.press("Enter")
    page.keyboard.type("(2, ")
    page.keyboard.press("Control+Space")
    # the list of the call's arguments (a list still open from before may show first)
    labels_js = ("Array.from(document.querySelectorAll("
                 "'.cm-tooltip-autocomplete .cm-completionLabel'), l => l.textContent)")
    page.wait_for_function(f"() => {labels_js}.includes('s=')")
    labels = page.evaluate(f"() => {labels_js}")
    from netspec.ops import lookup

    assert sorted(labels) == sorted(f"{a.name}=" for a in lookup("maxpool").args)
    page.keyboard.press("Escape")
    assert "output x -> maxpool(2, " in editor_text(page)
