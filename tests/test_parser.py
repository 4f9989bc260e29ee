"""Parse stage: .net text -> AST. Structure, precedence, spans, and how syntax errors read."""
from __future__ import annotations

import re
from importlib import resources

import pytest

from netspec import syntax as S
from netspec.diagnostics import NetspecError
from netspec.parser import MAX_DEPTH, MAX_NESTING, keywords, lark_parser, parse_module


def body(text: str) -> tuple:
    """The statements of the only definition in `text`."""
    (d,) = parse_module(text, "t.net").definitions
    return d.body


def value(expr: str):
    """The AST of a value expression, via `let v = (<expr>)`."""
    (let,) = body(f"network n {{ let v = ({expr}) }}")
    return let.value


def show(e) -> str:
    """A value AST as a fully parenthesized string, to check precedence at a glance."""
    if isinstance(e, S.Const):
        return repr(e.value)
    if isinstance(e, S.Name):
        return e.name
    if isinstance(e, S.BinOp):
        return f"({show(e.left)} {e.op} {show(e.right)})"
    if isinstance(e, S.UnaryOp):
        return f"({e.op} {show(e.operand)})"
    if isinstance(e, S.Cond):
        return f"({show(e.then)} if {show(e.test)} else {show(e.otherwise)})"
    if isinstance(e, S.ListExpr):
        return "[" + ", ".join(show(i) for i in e.items) + "]"
    raise TypeError(e)


def syntax_error(text: str) -> str:
    with pytest.raises(NetspecError) as info:
        parse_module(text, "t.net")
    (d,) = info.value.diagnostics
    return d.render()


# ---- the parser itself

def test_parser_is_built_once_per_process():
    assert lark_parser() is lark_parser()


def test_grammar_ships_inside_the_package():
    grammar = resources.files("netspec.grammars").joinpath("netspec.lark")
    assert grammar.is_file()
    assert lark_parser().options.parser == "lalr"


def test_keywords_come_from_the_grammar():
    assert {"input", "output", "let", "if", "else", "train", "block", "network", "import",
            "true", "false", "none", "and", "or", "not", "where", "int", "float"} == keywords()


# ---- file structure

def test_empty_file_is_an_empty_module():
    m = parse_module("", "empty.net")
    assert m.path == "empty.net" and m.imports == [] and m.definitions == []


def test_comments_and_blank_lines_are_ignored():
    m = parse_module("# a comment\n\nnetwork n { # trailing\n}\n# end", "t.net")
    assert [d.name for d in m.definitions] == ["n"]


def test_imports_blocks_and_networks_keep_their_order():
    m = parse_module('import "a.net"\nblock b { }\nimport "c.net"\nnetwork n { }\n'
                     'block d { }', "t.net")
    assert [i.path for i in m.imports] == ["a.net", "c.net"]
    assert [(d.kind, d.name) for d in m.definitions] == [
        ("block", "b"), ("network", "n"), ("block", "d")]


def test_parameters_with_and_without_defaults():
    (d,) = parse_module("block b(c, s = 1, proj = false,) { }", "t.net").definitions
    assert [p.name for p in d.params] == ["c", "s", "proj"]
    assert d.params[0].default is None
    assert show(d.params[1].default) == "1"
    assert show(d.params[2].default) == "False"


def test_semicolons_between_statements_are_optional():
    assert len(body("network n { input x: [3]; output x; }")) == 2
    assert len(body("network n { input x: [3] output x }")) == 2


# ---- statements

def test_input_with_and_without_shape():
    a, b = body("block b { input x\n }"), body("network n { input x: [3, 224, 224] }")
    assert a[0].name == "x" and a[0].shape is None
    assert show(b[0].shape) == "[3, 224, 224]"


def test_assignment_names_a_pipeline():
    (st,) = body("network n { y = x -> conv(64, k=3) -> relu }")
    assert isinstance(st, S.Assign) and st.name == "y"
    assert isinstance(st.tensor, S.Pipeline)
    assert st.tensor.head == S.Ref("x", st.tensor.head.span)
    assert [s.core.name for s in st.tensor.stages] == ["conv", "relu"]


def test_call_arguments_positional_then_keyword():
    (st,) = body("network n { y = x -> conv(64, k=3, s=2, p=\"same\", bias=false) }")
    call = st.tensor.stages[0].core
    assert [(a.name, show(a.value)) for a in call.args] == [
        (None, "64"), ("k", "3"), ("s", "2"), ("p", "'same'"), ("bias", "False")]


def test_bare_layer_name_is_a_call_without_arguments():
    (st,) = body("network n { y = x -> relu }")
    assert st.tensor.stages[0].core == S.Call("relu", (), st.tensor.stages[0].core.span)


def test_labels_may_be_dotted_like_pytorch_names():
    (st,) = body("network n { y = x -> conv1: conv(8, k=1) -> downsample.0: conv(8, k=1) }")
    assert [s.label for s in st.tensor.stages] == ["conv1", "downsample.0"]


def test_bracketed_sequence_with_label_and_repeat():
    (st,) = body("network n { y = x -> features: [conv(8, k=3) -> relu] * 2 }")
    (stage,) = st.tensor.stages
    assert stage.label == "features" and show(stage.repeat) == "2"
    assert isinstance(stage.core, S.Group)
    assert [s.core.name for s in stage.core.stages] == ["conv", "relu"]


def test_repeat_count_is_any_value_expression():
    (st,) = body("network n { y = x -> basic(64) * (n + 1) }")
    assert show(st.tensor.stages[0].repeat) == "(n + 1)"


def test_add_binds_tighter_than_the_pipeline_arrow():
    (st,) = body("network n { y = a + b + c -> relu }")
    head = st.tensor.head
    assert isinstance(head, S.AddTensor)
    assert [r.name for r in head.items] == ["a", "b", "c"]


def test_tuple_of_tensors_feeds_a_merge():
    (st,) = body("network n { y = (a, b, c,) -> concat }")
    assert [r.name for r in st.tensor.head.items] == ["a", "b", "c"]


def test_parenthesized_tensor_is_not_a_tuple():
    (st,) = body("network n { y = (a + b) }")
    assert isinstance(st.tensor, S.AddTensor)


def test_output_and_let():
    out, let = body("network n { output x -> relu\n let c = 4 }")
    assert isinstance(out, S.OutputStmt) and isinstance(out.tensor, S.Pipeline)
    assert let.name == "c" and show(let.value) == "4"


def test_if_else_if_else_chains_nest_in_the_else_branch():
    (st,) = body("network n { if a { y = x } else if b { y = x } else { y = x } }")
    assert isinstance(st, S.If) and show(st.test) == "a"
    (inner,) = st.otherwise
    assert isinstance(inner, S.If) and show(inner.test) == "b"
    assert len(inner.then) == 1 and len(inner.otherwise) == 1


def test_if_without_else_has_an_empty_else():
    (st,) = body("network n { if a { y = x } }")
    assert st.otherwise == ()


def test_train_section_with_settings_and_calls():
    (st,) = body("network n { train { epochs = 10\n optimizer = adam(lr = 1e-3)\n"
                 " loss = softmax; } }")
    assert [e.key for e in st.entries] == ["epochs", "optimizer", "loss"]
    opt = st.entries[1].value
    assert isinstance(opt, S.CallExpr) and opt.name == "adam"
    assert [(k, show(v)) for k, v, _ in opt.kwargs] == [("lr", "0.001")]


# ---- value expressions: literals and precedence (lowest to highest, like Python)

@pytest.mark.parametrize("text, expected", [
    ("42", "42"), ("0.5", "0.5"), ("1e-3", "0.001"), ("2.5E2", "250.0"),
    ("true", "True"), ("false", "False"), ("none", "None"),
    ('"same"', "'same'"), (r'"a\"b\\c"', "'a\"b\\\\c'"),
    ("[]", "[]"), ("[1, [2, 3],]", "[1, [2, 3]]"),
])
def test_literals(text, expected):
    assert show(value(text)) == expected


@pytest.mark.parametrize("text, expected", [
    ("1 + 2 * 3", "(1 + (2 * 3))"),
    ("1 - 2 - 3", "((1 - 2) - 3)"),
    ("c * 4 // 2 % 3", "(((c * 4) // 2) % 3)"),
    ("2 ** 3 ** 2", "(2 ** (3 ** 2))"),
    ("-2 ** 2", "(- (2 ** 2))"),
    ("2 ** -1", "(2 ** (- 1))"),
    ("(1 + 2) * 3", "((1 + 2) * 3)"),
    ("a < b == c", None),  # comparisons do not chain: a syntax error
    ("s != 1 or proj", "((s != 1) or proj)"),
    ("a or b and c", "(a or (b and c))"),
    ("not a and b", "((not a) and b)"),
    ("not a == b", "(not (a == b))"),
    ("2 if i == 0 else 1", "(2 if (i == 0) else 1)"),
    ("1 if a else 2 if b else 3", "(1 if a else (2 if b else 3))"),
])
def test_operator_precedence(text, expected):
    if expected is None:
        with pytest.raises(NetspecError):
            value(text)
    else:
        assert show(value(text)) == expected


def test_conditional_value_needs_brackets_outside_arguments():
    # At statement level `if` starts a statement, so `let a = 1 if c else 2` would be
    # ambiguous; inside brackets or arguments it is an expression.
    rendered = syntax_error("network n {\n  let a = 1 if c else 2\n}")
    assert rendered.splitlines()[0] == "t.net:2:18: error: unexpected keyword `else`"
    assert "(a if c else b)" in rendered.splitlines()[-1]
    (let,) = body("network n { let a = (1 if c else 2) }")
    assert show(let.value) == "(1 if c else 2)"


def test_call_in_value_position_parses_with_keywords():
    e = value("sgd(lr = 0.1, momentum = 0.9)")
    assert isinstance(e, S.CallExpr) and [k for k, _, _ in e.kwargs] == ["lr", "momentum"]


# ---- spans

def test_spans_are_one_based_with_exclusive_end():
    text = "network n {\n    y = x -> conv(64, k=3)\n}\n"
    (st,) = body(text)
    call = st.tensor.stages[0].core
    assert (call.span.line, call.span.col, call.span.end_line, call.span.end_col) == \
        (2, 14, 2, 27)
    assert text.splitlines()[1][call.span.col - 1:call.span.end_col - 1] == "conv(64, k=3)"
    assert (st.name_span.col, st.name_span.end_col) == (5, 6)


def test_definition_knows_the_span_of_its_name():
    (d,) = parse_module("\n\nblock basic(c) { }", "t.net").definitions
    assert (d.name_span.line, d.name_span.col, d.name_span.end_col) == (3, 7, 12)
    assert str(d.span) == "t.net:3:1"


def test_span_keeps_the_source_for_quoting():
    (st,) = body("network n {\n  output x\n}")
    assert st.span.source.line(2) == "  output x"
    assert st.span.path == "t.net"


# ---- names

@pytest.mark.parametrize("name", ["x", "_x", "conv1", "layer_2", "X9"])
def test_names_are_identifiers(name):
    assert body(f"network n {{ {name} = x }}")[0].name == name


@pytest.mark.parametrize("word", ["input", "output", "let", "if", "true", "none", "network"])
def test_keywords_cannot_name_things(word):
    for text in (f"network n {{ input {word}: [3] }}", f"network n {{ let {word} = 1 }}",
                 f"block {word} {{ }}", f"block b({word}) {{ }}"):
        with pytest.raises(NetspecError) as info:
            parse_module(text, "t.net")
        assert "keyword" in str(info.value)


def test_keywords_may_label_layers_as_torchvision_names_them():
    # LeNet-5's last layer is called `output` in the paper and in specs/lenet5.net.
    (st,) = body("network n { y = x -> output: linear(10) }")
    assert st.tensor.stages[0].label == "output"


# ---- syntax errors: located, in words

@pytest.mark.parametrize("text, where, message, hint", [
    ("network n {\n  input x: [3, 8\n  output x\n}", "t.net:3:3",
     "unexpected keyword `output`", "expected `]` or `,`"),
    ("network n {\n  y = x -> conv(8, k=3 -> relu\n}", "t.net:2:24",
     "unexpected `->`", "expected `)`, `,` or an operator"),
    ("network n {\n  y = x -> -> relu\n}", "t.net:2:12",
     "unexpected `->`", "expected a layer or block, or a `[` sequence"),
    ("network n {\n  y = x -> relu\n", "t.net:2:16",
     "unexpected end of file", "expected `}`, `->`, `:`, `(`, `*` or a statement"),
    ("network n {\n  y = x ~ relu\n}", "t.net:2:9",
     "unexpected character '~'", None),
    ("network n {\n  let = 3\n}", "t.net:2:7",
     "unexpected `=`", "expected a name; `let` is a keyword and cannot be used as a name"),
    ("network n {\n  y = x -> relu]\n}", "t.net:2:16", "unmatched `]`", None),
    ("block b { }\nrelu", "t.net:2:1",
     "unexpected name `relu`", "expected `network`, `block` or `import`"),
    ('network n {\n  let s = "abc\n}', "t.net:2:11", "unterminated string", None),
])
def test_syntax_error_says_where_and_what_was_expected(text, where, message, hint):
    rendered = syntax_error(text)
    first, *_, last = rendered.splitlines()
    assert first == f"{where}: error: {message}"
    if hint:
        assert last == f"hint: {hint}"


def test_unexpected_end_of_file_points_at_the_unclosed_brace():
    rendered = syntax_error("network n {\n  y = x -> relu\n")
    assert "  note: this `{` is still open (t.net:1)" in rendered.splitlines()


def test_unclosed_bracket_on_an_earlier_line_is_pointed_at():
    rendered = syntax_error("network n {\n  input x: [3,\n    8\n  output x\n}")
    assert "  note: this `[` is still open (t.net:2)" in rendered.splitlines()


@pytest.mark.parametrize("text", [
    "network n {", "network", "network n { y = x -> conv(", "network n { y = x -> [relu",
    "network n { let a = [1, 2", "block b(c = ) { }", "network n { y = x -> relu * }",
    "import", "import blocks", "network n { train { lr } }", "network n { y = (x, ) }",
    "network n { if { } }", "network n { output x -> 3 }", "network n { output x.y }",
])
def test_no_syntax_error_mentions_lark_internals(text):
    rendered = syntax_error(text)
    assert not re.search(r"\b[A-Z][A-Z_]{2,}\b|__ANON|\$END|Token\(", rendered), rendered


def test_brackets_nested_too_deep_are_refused_before_parsing():
    depth = MAX_NESTING + 1
    text = "network n { let a = " + "(" * depth + "1" + ")" * depth + " }"
    assert f"brackets nested more than {MAX_NESTING} deep" in syntax_error(text)


def test_brackets_inside_strings_and_comments_do_not_count_as_nesting():
    text = 'network n { let a = "' + "(" * 100 + '" # ' + "[" * 100 + "\n}"
    assert parse_module(text, "t.net").definitions[0].body[0].name == "a"


def test_expression_deeper_than_the_limit_is_a_located_error():
    terms = " + ".join(["1"] * (MAX_DEPTH + 50))
    rendered = syntax_error(f"network n {{\n  let a = {terms}\n}}")
    assert rendered.startswith(f"t.net:2:11: error: expression nested more than {MAX_DEPTH}")


def test_expression_just_under_the_limit_parses():
    terms = " + ".join(["1"] * (MAX_DEPTH - 20))
    assert parse_module(f"network n {{ let a = {terms} }}", "t.net")


def test_too_large_source_is_refused_without_parsing():
    with pytest.raises(NetspecError, match="spec is too large"):
        parse_module("#" * 2_000_001, "big.net")
