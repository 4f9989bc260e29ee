// Bundle src/editor.js (CodeMirror 6 and the netspec language) into one file the Python
// package ships: netspec/web/editor.js, or the path given. `npm ci && npm run build` from
// the lock file gives the committed file byte for byte (tests/test_serve.py checks it).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const out = process.argv[2] || here("../../netspec/web/editor.js");

await build({
  entryPoints: [here("src/editor.js")],
  outfile: out,
  bundle: true,
  format: "iife",
  target: "es2020",
  minify: true,
  charset: "utf8",
  legalComments: "none",
  logLevel: "warning",
  banner: {
    js: "/* netspec serve's editor: CodeMirror 6 (MIT, (c) Marijn Haverbeke and others, " +
        "https://codemirror.net) and the netspec language, bundled by esbuild from " +
        "editors/web (npm ci && npm run build). Do not edit. */",
  },
});
