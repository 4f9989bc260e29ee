// The editor of `netspec serve`: CodeMirror 6 with the netspec language (highlighting from
// the grammar's own terminals, tokens.json) and diagnostics underlined as you type
// (@codemirror/lint, fed by the server's analysis through options.check). Bundled by esbuild
// into netspec/web/editor.js; the page (netspec/web/app.js) uses window.NetspecEditor.
// Spec text is only ever tokenized and displayed here, never evaluated.
import { autocompletion, completionKeymap } from "@codemirror/autocomplete";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import {
  HighlightStyle, StreamLanguage, StringStream, bracketMatching, indentOnInput,
  indentUnit, syntaxHighlighting,
} from "@codemirror/language";
import { forceLinting, lintGutter, lintKeymap, linter } from "@codemirror/lint";
import { highlightSelectionMatches, search, searchKeymap } from "@codemirror/search";
import { Compartment, EditorState } from "@codemirror/state";
import {
  EditorView, drawSelection, highlightActiveLine, highlightActiveLineGutter, hoverTooltip,
  keymap, lineNumbers,
} from "@codemirror/view";
import { Tag, tags } from "@lezer/highlight";
import grammarTokens from "./tokens.json";

// ---- the language -----------------------------------------------------------------------

// Each netspec class (netspec/highlight.py's CLASSES) is a tag of its own, a child of the
// standard tag it is closest to, so the page's CSS (`.t-keyword`, ...) colors exactly the
// classes Pygments and the TextMate grammar use.
const PARENTS = {
  comment: tags.comment, string: tags.string, float: tags.float, integer: tags.integer,
  constant: tags.atom, word_operator: tags.operatorKeyword, declaration: tags.definitionKeyword,
  import: tags.moduleKeyword, keyword: tags.keyword, arrow: tags.operator,
  operator: tags.operator, punctuation: tags.punctuation, name: tags.variableName,
  error: tags.invalid,
};
const TAGS = Object.fromEntries(Object.entries(PARENTS).map(([cls, parent]) =>
  [cls, Tag.define(parent)]));
const RULES = grammarTokens.tokens.map(([cls, source]) => [cls, new RegExp(`^(?:${source})`)]);

// One token at the stream's position: its class (null for whitespace). The longest match
// wins, the earlier rule on a tie (`network` is a keyword, `networks` a name), as in the
// grammar's lexer.
function token(stream) {
  if (stream.eatSpace()) return null;
  const rest = stream.string.slice(stream.pos);
  let best = null;
  let length = 0;
  for (const [cls, pattern] of RULES) {
    const match = pattern.exec(rest);
    if (match && match[0].length > length) [best, length] = [cls, match[0].length];
  }
  if (best === null) {
    stream.next();
    return "error";
  }
  stream.pos += length;
  return best;
}

const netspecLanguage = StreamLanguage.define({
  name: "netspec",
  token,
  tokenTable: TAGS,
  languageData: { commentTokens: { line: "#" }, closeBrackets: { brackets: ["(", "[", "{"] } },
});

const highlighting = HighlightStyle.define(
  Object.entries(TAGS).map(([cls, tag]) => ({ tag, class: `t-${cls}` })));

// [[from, to, class], ...] of a whole text, by the same tokenizer the editor runs (tests
// compare it with the grammar's lexer on every bundled spec).
function tokens(text) {
  const out = [];
  let offset = 0;
  for (const line of text.split("\n")) {
    const stream = new StringStream(line, 4, 4);
    while (!stream.eol()) {
      const cls = token(stream);
      if (cls !== null) out.push([offset + stream.start, offset + stream.pos, cls]);
      stream.start = stream.pos;
    }
    offset += line.length + 1;
  }
  return out;
}

// ---- diagnostics --------------------------------------------------------------------------

// A server diagnostic (1-based line and column, exclusive end) as a CodeMirror one, or null
// when it has no place in this document.
function toLint(doc, d) {
  if (!d.line) return null;
  const at = (line, column) => {
    if (line > doc.lines) return doc.length;
    const l = doc.line(Math.max(line, 1));
    return Math.min(l.from + Math.max(column, 1) - 1, l.to);
  };
  const from = at(d.line, d.column);
  let to = d.end ? at(d.end.line, d.end.column) : from;
  if (to <= from) to = Math.min(from + 1, doc.length);
  return {
    from, to, severity: d.severity === "warning" ? "warning" : "error", message: d.message,
    renderMessage: () => {
      const box = document.createElement("div");
      box.textContent = d.message;
      if (d.hint) {
        const hint = document.createElement("div");
        hint.className = "netspec-hint";
        hint.textContent = `hint: ${d.hint}`;
        box.appendChild(hint);
      }
      return box;
    },
  };
}

// ---- the editor ------------------------------------------------------------------------------

// Completion items the page gets from the server (the language server's completions):
// [{label, kind, detail, apply}] for a 1-based line and column.
function completionSource(complete) {
  return async (context) => {
    const word = context.matchBefore(/[A-Za-z_][A-Za-z0-9_]*/);
    if (!word && !context.explicit) return null;
    const line = context.state.doc.lineAt(context.pos);
    const items = await complete(context.state.doc.toString(), line.number,
                                 context.pos - line.from + 1);
    if (context.aborted || !items) return null;
    return {
      from: word ? word.from : context.pos,
      options: items.map((i) => ({ label: i.label, type: i.kind, detail: i.detail || undefined,
                                   apply: i.apply || i.label })),
      validFor: /^[A-Za-z_][A-Za-z0-9_]*$/,
    };
  };
}

// options: parent (element), text, readOnly, check(text) -> Promise<diagnostics of this
// file>, onChange(text) after each edit by the user, hover(line, column, word) -> an
// element describing what is written there, or null, complete(text, line, column) ->
// Promise<completion items>.
function create(options) {
  const readOnly = new Compartment();
  let quiet = false; // a text set by the page (open, reload) is not the user's edit
  const view = new EditorView({
    parent: options.parent,
    state: EditorState.create({
      doc: options.text || "",
      extensions: [
        lineNumbers(), highlightActiveLineGutter(), history(), drawSelection(),
        indentOnInput(), bracketMatching(), highlightActiveLine(), search({ top: true }),
        highlightSelectionMatches(), indentUnit.of("    "), EditorState.tabSize.of(4),
        keymap.of([...completionKeymap, ...defaultKeymap, ...historyKeymap, ...searchKeymap,
                   ...lintKeymap, indentWithTab]),
        options.complete ? autocompletion({ override: [completionSource(options.complete)] })
                         : [],
        netspecLanguage, syntaxHighlighting(highlighting), lintGutter(),
        linter(async (v) => {
          const doc = v.state.doc;
          const diagnostics = await options.check(doc.toString());
          return diagnostics.map((d) => toLint(doc, d)).filter((d) => d !== null);
        }, { delay: 250 }),
        readOnly.of(EditorState.readOnly.of(Boolean(options.readOnly))),
        hoverTooltip((v, pos) => {
          if (!options.hover) return null;
          const word = v.state.wordAt(pos);
          if (!word) return null;
          const line = v.state.doc.lineAt(word.from);
          const dom = options.hover(line.number, word.from - line.from + 1,
                                    v.state.sliceDoc(word.from, word.to));
          return dom ? { pos: word.from, end: word.to, above: true, create: () => ({ dom }) }
                     : null;
        }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged && !quiet && options.onChange) {
            options.onChange(update.state.doc.toString());
          }
        }),
        EditorView.contentAttributes.of({ "aria-label": "spec text" }),
      ],
    }),
  });
  return {
    view,
    text: () => view.state.doc.toString(),
    setText(text, isReadOnly) {
      quiet = true;
      try {
        view.dispatch({
          changes: { from: 0, to: view.state.doc.length, insert: text },
          effects: readOnly.reconfigure(EditorState.readOnly.of(Boolean(isReadOnly))),
        });
      } finally {
        quiet = false;
      }
      forceLinting(view);
    },
    // Replace the whole text as the user's edit (marks the file changed; undo restores).
    replace(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text },
                      userEvent: "input.format" });
    },
    // Put the cursor at a 1-based line and column and scroll there (focus: type there next).
    jumpTo(line, column, focus = true) {
      const l = view.state.doc.line(Math.min(Math.max(line, 1), view.state.doc.lines));
      const pos = Math.min(l.from + Math.max(column, 1) - 1, l.to);
      view.dispatch({ selection: { anchor: pos }, scrollIntoView: true });
      if (focus) view.focus();
    },
    cursor() {
      const head = view.state.selection.main.head;
      const line = view.state.doc.lineAt(head);
      return { line: line.number, column: head - line.from + 1 };
    },
    recheck: () => forceLinting(view),
  };
}

window.NetspecEditor = { create, tokens };
