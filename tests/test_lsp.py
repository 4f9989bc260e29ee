"""`netspec lsp` driven by a real LSP client session over stdio: the test speaks the protocol
itself (Content-Length framed JSON-RPC 2.0, written here from the specification, not pygls's
client), so it checks what an editor sees: initialize, didOpen, publishDiagnostics, didChange,
hover, definition, completion, documentSymbol, formatting, shutdown and exit.

Expected numbers come from outside the server: torchvision's ResNet-18 conv1 has
64 * 3 * 7 * 7 = 9,408 weights and 118,013,952 MACs at 224x224, its receptive field is 7 with
jump 2 (Araujo et al.), and the formatter's output is netspec.fmt's."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("pygls", reason="netspec lsp needs pygls (pip install 'netspec[lsp]')")

from netspec.fmt import format_text

ROOT = Path(__file__).parent.parent
TIMEOUT = 30


class Client:
    """A minimal LSP client: requests with ids, notifications, and a reader thread that
    sorts the server's messages into responses and notifications."""

    def __init__(self, cwd: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "netspec", "lsp"], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.next_id = 0
        self.responses: dict[int, queue.Queue] = {}
        self.notifications: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.proc.stdout
        while True:
            headers = {}
            while True:
                line = stream.readline()
                if not line:
                    return
                line = line.decode("ascii").strip()
                if not line:
                    break
                key, _, value = line.partition(":")
                headers[key.lower()] = value.strip()
            body = json.loads(stream.read(int(headers["content-length"])))
            if "id" in body and "method" not in body:
                self.responses.setdefault(body["id"], queue.Queue()).put(body)
            elif "method" in body and "id" in body:  # a request from the server
                self._send({"jsonrpc": "2.0", "id": body["id"], "result": None})
            else:
                self.notifications.put(body)

    def _send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        self.proc.stdin.flush()

    def request(self, method: str, params) -> dict:
        self.next_id += 1
        box = self.responses.setdefault(self.next_id, queue.Queue())
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        response = box.get(timeout=TIMEOUT)
        assert "error" not in response, response
        return response["result"]

    def notify(self, method: str, params) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def diagnostics(self, uri: str, version: int | None = None) -> list[dict]:
        """The next publishDiagnostics for `uri` (of `version`, if given)."""
        while True:
            message = self.notifications.get(timeout=TIMEOUT)
            params = message.get("params", {})
            if message["method"] == "textDocument/publishDiagnostics" \
                    and params["uri"] == uri and (version is None
                                                  or params.get("version") == version):
                return params["diagnostics"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One server for the module: initialize ... shutdown and exit around the tests."""
    cwd = tmp_path_factory.mktemp("lsp")
    client = Client(cwd)
    result = client.request("initialize", {"processId": None, "rootUri": cwd.as_uri(),
                                           "capabilities": {}})
    client.notify("initialized", {})
    client.capabilities = result["capabilities"]
    client.cwd = cwd
    yield client
    assert client.request("shutdown", None) is None
    client.notify("exit", None)
    assert client.proc.wait(timeout=TIMEOUT) == 0
    client.proc.stdout.close()
    client.proc.stderr.close()


def open_doc(client: Client, name: str, text: str) -> str:
    path = client.cwd / name
    path.write_text(text)
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "netspec", "version": 1, "text": text}})
    return uri


BROKEN = """network n {
    input x: [3, 32, 32]
    a = x -> conv(16, k=3, p=1) -> maxpol(2)
    b = x -> conv(16, kernel_size=3)
    c = x -> conv(8, k=3) -> relu
    output (c, x) -> add -> flatten -> linear(10)
}
"""
FIXED = """network n {
    input x: [3, 32, 32]
    a = x -> conv(16, k=3, p=1) -> maxpool(2)
    b = a -> conv(16, k=3, p=1)
    output (a, b) -> concat -> flatten -> linear(10)
}
"""


def test_server_announces_its_features(session):
    caps = session.capabilities
    for feature in ("hoverProvider", "definitionProvider", "completionProvider",
                    "documentSymbolProvider", "documentFormattingProvider",
                    "codeActionProvider"):
        assert caps.get(feature), feature
    assert caps["textDocumentSync"]["change"] == 1  # full text on each change


def test_diagnostics_as_you_type_all_of_them_with_hints(session):
    uri = open_doc(session, "typing.net", BROKEN)
    diagnostics = session.diagnostics(uri, 1)
    assert [(d["range"]["start"]["line"], d["range"]["start"]["character"])
            for d in diagnostics] == [(2, 35), (3, 22), (5, 21)]
    first = diagnostics[0]
    assert first["message"] == "unknown op or block `maxpol`"
    assert first["severity"] == 1 and first["source"] == "netspec"
    assert first["range"]["end"] == {"line": 2, "character": 44}
    hints = [r["message"] for r in first["relatedInformation"]]
    assert hints == ["hint: did you mean `maxpool`?"]
    shape = diagnostics[2]  # the mismatched add names where its inputs come from
    notes = [(r["message"], r["location"]["range"]["start"]["line"])
             for r in shape["relatedInformation"]]
    assert notes[0] == ("input 1 is `relu` of shape [8,30,30]", 4)

    session.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"text": FIXED}]})
    assert session.diagnostics(uri, 2) == []


def test_did_you_mean_hints_are_quick_fixes(session):
    uri = open_doc(session, "fixes.net", BROKEN)
    session.diagnostics(uri, 1)
    actions = session.request("textDocument/codeAction", {
        "textDocument": {"uri": uri},
        "range": {"start": {"line": 2, "character": 0}, "end": {"line": 3, "character": 40}},
        "context": {"diagnostics": []}})
    fixes = [(a["title"], a["edit"]["changes"][uri][0]) for a in actions]
    assert [title for title, _ in fixes] == ["Replace `maxpol` with `maxpool`",
                                             "Replace `kernel_size` with `k`"]
    edit = fixes[0][1]
    assert edit["range"] == {"start": {"line": 2, "character": 35},
                             "end": {"line": 2, "character": 41}}
    assert edit["newText"] == "maxpool"
    assert actions[0]["kind"] == "quickfix"


def test_hover_shows_shape_parameters_macs_and_receptive_field(session):
    text = (ROOT / "specs" / "resnet18.net").read_text()
    (session.cwd / "blocks").mkdir(exist_ok=True)
    uri = open_doc(session, "resnet18.net", text)
    session.diagnostics(uri)
    line = next(k for k, s in enumerate(text.splitlines()) if "conv1: conv(" in s)
    column = text.splitlines()[line].index("conv(") + 1
    hover = session.request("textDocument/hover", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": column}})
    value = hover["contents"]["value"]
    assert "**conv1**" in value
    assert "output [64, 112, 112]" in value
    assert "9,408 parameters" in value
    assert "118,013,952 MACs" in value
    assert "receptive field 7, jump 2" in value

    layer = next(k for k, s in enumerate(text.splitlines()) if "layer2:" in s)
    column = text.splitlines()[layer].index("basic") + 1
    hover = session.request("textDocument/hover", {
        "textDocument": {"uri": uri}, "position": {"line": layer, "character": column}})
    value = hover["contents"]["value"]
    # torchvision's resnet18.layer2: 230,144 + 295,424 = 525,568 parameters
    assert "block `basic` × 2" in value and "output [128, 28, 28]" in value
    assert "525,568 parameters" in value


def test_go_to_definition_of_a_block_a_tensor_and_an_import(session):
    text = (ROOT / "specs" / "resnet18.net").read_text()
    uri = (session.cwd / "resnet18.net").as_uri()
    lines = text.splitlines()
    layer = next(k for k, s in enumerate(lines) if "layer1:" in s)
    found = session.request("textDocument/definition", {
        "textDocument": {"uri": uri},
        "position": {"line": layer, "character": lines[layer].index("basic") + 2}})
    assert found["uri"].endswith("/specs/blocks/resnet.net")
    block_line = next(k for k, s in enumerate(
        (ROOT / "specs" / "blocks" / "resnet.net").read_text().splitlines())
        if s.startswith("block basic"))
    assert found["range"]["start"]["line"] == block_line

    imp = next(k for k, s in enumerate(lines) if s.startswith("import"))
    found = session.request("textDocument/definition", {
        "textDocument": {"uri": uri}, "position": {"line": imp, "character": 10}})
    assert found["uri"].endswith("/specs/blocks/resnet.net")

    uri = (session.cwd / "typing.net").as_uri()
    found = session.request("textDocument/definition", {
        "textDocument": {"uri": uri}, "position": {"line": 4, "character": 13}})
    assert found["range"]["start"] == {"line": 2, "character": 4}  # `a = ...`


def test_completion_of_ops_blocks_and_argument_names(session):
    uri = open_doc(session, "complete.net", 'import "blocks/resnet.net"\nnetwork n {\n'
                   "    input x: [3, 8, 8]\n    output x -> \n}\n")
    session.diagnostics(uri)
    items = session.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": 3, "character": 16}})["items"]
    labels = {i["label"] for i in items}
    assert {"conv", "maxpool", "relu", "linear", "basic", "bottleneck"} <= labels
    assert "input" not in labels and "x" not in labels

    session.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"text": 'network n {\n    input x: [3, 8, 8]\n'
                                    "    output x -> conv(8, \n}\n"}]})
    items = session.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": 2, "character": 24}})["items"]
    assert {"k=", "s=", "p=", "bias="} <= {i["label"] for i in items}


def test_document_symbols_list_networks_blocks_and_labels(session):
    uri = (session.cwd / "resnet18.net").as_uri()
    symbols = session.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    (net,) = symbols
    assert net["name"] == "resnet18" and net["detail"] == "network"
    children = [c["name"] for c in net["children"]]
    assert children[:3] == ["x", "conv1", "bn1"] and "fc" in children


def test_formatting_is_the_formatter(session):
    messy = "network n{input x:[4]\noutput x->linear(2)}\n"
    uri = open_doc(session, "messy.net", messy)
    session.diagnostics(uri)
    edits = session.request("textDocument/formatting", {
        "textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}})
    (edit,) = edits
    assert edit["newText"] == format_text(messy)
    assert edit["range"]["start"] == {"line": 0, "character": 0}
