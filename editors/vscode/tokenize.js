// Tokenize files with VS Code's own TextMate engine (vscode-textmate + Oniguruma) and the
// grammar in syntaxes/; print [{file, lines: [[[start, end, scopes], ...], ...]}] as JSON.
// Used by tests/test_highlight.py: node tokenize.js FILE...
const fs = require("fs");
const path = require("path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const wasm = fs.readFileSync(path.join(__dirname, "node_modules/vscode-oniguruma/release/onig.wasm"));
const onigLib = oniguruma.loadWASM(wasm.buffer).then(() => ({
  createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
  createOnigString: (s) => new oniguruma.OnigString(s),
}));
const registry = new vsctm.Registry({
  onigLib,
  loadGrammar: async (scopeName) => {
    if (scopeName !== "source.netspec") return null;
    const file = path.join(__dirname, "syntaxes/netspec.tmLanguage.json");
    return vsctm.parseRawGrammar(fs.readFileSync(file, "utf8"), file);
  },
});

registry.loadGrammar("source.netspec").then((grammar) => {
  const out = process.argv.slice(2).map((file) => {
    let state = vsctm.INITIAL;
    const lines = fs.readFileSync(file, "utf8").split("\n").map((line) => {
      const result = grammar.tokenizeLine(line, state);
      state = result.ruleStack;
      return result.tokens.map((t) => [t.startIndex, Math.min(t.endIndex, line.length), t.scopes]);
    });
    return { file, lines };
  });
  process.stdout.write(JSON.stringify(out));
});
