"""Analyze stage, symbolic sizes: size symbols, exact evaluation, readable forms, and what the
conditions collected by the shape rules say about the input size (the smallest size each
symbol may take, the congruences under which no input row is dropped).

The passes themselves are the concrete ones: shape and cost rules are written over ints or
SymPy expressions alike (netspec.ops.base: floordiv, ceildiv, mod, select, require). This
module is imported only when an input has a symbolic size, and it is what imports SymPy.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import reduce
from typing import Any

import sympy

from netspec.diagnostics import Diagnostic, NetspecError

SYMBOL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
SCAN_LIMIT = 1 << 16  # the largest size the minimum search tries


def size_symbol(name: str) -> sympy.Symbol:
    """The symbol of an input size: a positive integer (what makes floor merging exact)."""
    return sympy.Symbol(name, integer=True, positive=True)


def is_symbolic(v: Any) -> bool:
    return isinstance(v, sympy.Basic) and bool(v.free_symbols)


def dim(v: Any) -> Any:
    """An input dimension: an int stays an int, a name becomes its size symbol."""
    if isinstance(v, str):
        if not SYMBOL_RE.match(v):
            raise ValueError(f"{v!r} is not a size name")
        return size_symbol(v)
    return v


# ---- exact evaluation -------------------------------------------------------------------

_FUNCS: dict[type, Callable] = {sympy.floor: math.floor, sympy.ceiling: math.ceil}
_RELATIONS = {
    sympy.Eq: lambda a, b: a == b, sympy.Ne: lambda a, b: a != b,
    sympy.Lt: lambda a, b: a < b, sympy.Le: lambda a, b: a <= b,
    sympy.Gt: lambda a, b: a > b, sympy.Ge: lambda a, b: a >= b,
}


def compile_expr(e: Any) -> Callable[[dict], Any]:
    """A function of {symbol name: int} computing `e` exactly (Fractions, never floats):
    much faster than `subs`, and floor((H - 1)/2) stays an integer division."""
    if isinstance(e, bool) or not isinstance(e, sympy.Basic):
        return lambda env, v=e: v
    if e in (sympy.true, sympy.false):
        return lambda env, v=bool(e): v
    if e.is_Integer:
        return lambda env, v=int(e): v
    if e.is_Rational:
        return lambda env, v=Fraction(int(e.p), int(e.q)): v
    if e.is_Float:  # receptive-field starts are halves: exact in binary
        return lambda env, v=Fraction(float(e)): v
    if e.is_Symbol:
        return lambda env, n=e.name: env[n]
    if isinstance(e, sympy.Piecewise):
        pairs = [(compile_expr(v), compile_expr(c)) for v, c in e.args]
        return lambda env: next(v(env) for v, c in pairs if c(env))
    parts = [compile_expr(a) for a in e.args]
    if e.is_Add:
        return lambda env: sum(f(env) for f in parts)
    if e.is_Mul:
        return lambda env: math.prod(f(env) for f in parts)
    if e.is_Pow and e.exp.is_Integer:
        base, n = parts[0], int(e.exp)
        return lambda env: Fraction(base(env)) ** n
    if type(e) in _FUNCS:
        fn, arg = _FUNCS[type(e)], parts[0]
        return lambda env: fn(arg(env))
    if isinstance(e, sympy.Mod):
        return lambda env: parts[0](env) % parts[1](env)
    if isinstance(e, (sympy.Max, sympy.Min)):
        pick = max if isinstance(e, sympy.Max) else min
        return lambda env: pick(f(env) for f in parts)
    if type(e) in _RELATIONS:
        rel = _RELATIONS[type(e)]
        return lambda env: rel(parts[0](env), parts[1](env))
    if isinstance(e, sympy.And):
        return lambda env: all(f(env) for f in parts)
    if isinstance(e, sympy.Or):
        return lambda env: any(f(env) for f in parts)
    if isinstance(e, sympy.Not):
        return lambda env: not parts[0](env)
    if isinstance(e, sympy.ITE):  # a condition on Piecewise sizes (the larger of two maxima)
        cond, then, other = parts
        return lambda env: then(env) if cond(env) else other(env)
    raise TypeError(f"cannot evaluate {e} exactly")


def evaluate(e: Any, env: dict[str, int]) -> Any:
    """`e` at the sizes in env: an int (or Fraction, or bool for a condition)."""
    v = compile_expr(e)(env)
    if isinstance(v, Fraction) and v.denominator == 1:
        return int(v.numerator)
    return v


# ---- reading -----------------------------------------------------------------------------

def readable(e: Any) -> Any:
    """An equal expression that reads better: floor((H - 1)/2) + 1 -> ceiling(H/2) (exact
    for integer H: floor((n + a)/d) = ceiling((n + a - d + 1)/d)), products expanded and
    collected by size term."""
    if not is_symbolic(e):
        return e
    maxima = e.atoms(sympy.Max)
    if maxima:  # each argument on its own: expanding a Max re-compares all its arguments
        return e.xreplace({m: sympy.Max(*[readable(a) for a in m.args], evaluate=False)
                           for m in maxima})

    def to_ceiling(f: sympy.floor) -> Any:
        num, den = sympy.fraction(sympy.together(f.args[0]))
        if not den.is_Integer:
            return f
        shifted = sympy.expand((num - den + 1) / den)
        const = shifted.as_coeff_Add()[0]
        return sympy.ceiling(shifted) if const.is_integer else f

    return sympy.expand(e.replace(lambda x: isinstance(x, sympy.floor), to_ceiling))


def show(e: Any) -> str:
    """SymPy's syntax (`ceiling(H/2)*64`), parseable with sympy.sympify."""
    return str(e)


def show_condition(c: Any) -> str:
    """A condition as the spec writes it: `Mod(H, 32) == 0`, `H >= 32`."""
    if isinstance(c, (sympy.Eq, sympy.Ne)):
        op = "==" if isinstance(c, sympy.Eq) else "!="
        return f"{c.lhs} {op} {c.rhs}"
    return str(c)


# ---- conditions on the size ------------------------------------------------------------

@dataclass(frozen=True)
class SizeConditions:
    """What the shape rules require of the symbols, and what follows from it."""

    symbols: tuple[str, ...]
    minimum: dict[str, int]  # the smallest size of each symbol at which every layer fits
    no_dropped_rows: dict[str, str]  # "H ≡ 0 (mod 32)": no input row is ever left unread
    fit: tuple[tuple[Any, str], ...]  # (SymPy condition, what breaks where it fails)
    rows: tuple[tuple[Any, str], ...]  # (condition, which rows go unread where it fails)
    where: tuple[Any, ...]  # the spec's own constraints

    def to_dict(self) -> dict:
        return {
            "symbols": list(self.symbols), "minimum": dict(self.minimum),
            "no_dropped_rows": dict(self.no_dropped_rows),
            "where": [show_condition(c) for c in self.where],
            "conditions": [{"kind": kind, "condition": show_condition(c), "message": m}
                           for kind, items in (("fit", self.fit), ("rows", self.rows))
                           for c, m in items],
        }


def derive(symbols: list[sympy.Symbol], collected: list[tuple[str, Any, str]],
           where: list[Any]) -> SizeConditions:
    """The smallest size per symbol (every `fit` condition and the spec's `where` hold) and
    the residues for which every `rows` condition holds."""
    fit = _unique([(c, m) for k, c, m in collected if k == "fit"])
    rows = [(c, m) for c, m in _unique([(c, m) for k, c, m in collected if k == "rows"])
            if not _always(c)]
    names = [s.name for s in symbols]
    minimum: dict[str, int] = {}
    for s in symbols:
        own = [c for c, _ in fit if c.free_symbols <= {s}] + \
              [c for c in where if c.free_symbols <= {s}]
        checks = [compile_expr(c) for c in own]
        minimum[s.name] = next((v for v in range(1, SCAN_LIMIT)
                                if all(f({s.name: v}) for f in checks)), 0)
        if not minimum[s.name]:
            raise NetspecError(Diagnostic(
                "error", f"no size {s.name} up to {SCAN_LIMIT} satisfies the network's "
                "conditions: " + "; ".join(str(c) for c in own)))
    congruence = {s.name: _congruence(s, [c for c, _ in rows if s in c.free_symbols],
                                      minimum[s.name], [c for c in where
                                                        if c.free_symbols <= {s}])
                  for s in symbols}
    return SizeConditions(tuple(names), minimum, congruence, tuple(fit), tuple(rows),
                          tuple(where))


def _always(c: Any) -> bool:
    """A condition on one symbol that holds at every size (over a whole period)."""
    if len(c.free_symbols) != 1:
        return False
    (s,) = c.free_symbols
    m, f = period([c]), compile_expr(c)
    return all(f({s.name: v}) for v in range(m, 3 * m))


def _unique(items: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
    seen: set = set()
    out = []
    for c, m in items:
        if c not in seen:
            seen.add(c)
            out.append((c, m))
    return out


def period(conditions: list[Any]) -> int:
    """A common period of floor/ceiling/Mod expressions: the lcm of their denominators."""
    dens = [1]
    for c in conditions:
        for f in c.atoms(sympy.floor, sympy.ceiling, sympy.Mod):
            arg = f.args[0] if not isinstance(f, sympy.Mod) else f.args[0] / f.args[1]
            den = sympy.fraction(sympy.together(arg))[1]
            if den.is_Integer:
                dens.append(int(den))
    return reduce(math.lcm, dens)


def _congruence(s: sympy.Symbol, rows: list[Any], low: int, where: list[Any]) -> str:
    """`H ≡ 0 (mod 32)`: the sizes (at least `low`) at which every condition holds. The
    conditions are periodic in s with the lcm of their denominators, so checking one full
    period (twice, to be sure) decides every size."""
    if not rows:
        return f"every {s.name}"
    m = period(rows + where)
    checks = [compile_expr(c) for c in rows + where]
    start = low + (-low) % m  # a multiple of m at or above the minimum

    def ok(v: int) -> bool:
        return all(f({s.name: v}) for f in checks)

    good = {r for r in range(m) if ok(start + r) and ok(start + m + r)}
    if len(good) == m:
        return f"every {s.name}"
    if not good:
        return "no size"
    step = min(d for d in range(1, m + 1) if m % d == 0
               and all(((r + d) % m in good) for r in good))
    classes = sorted({r % step for r in good})
    if len(classes) == 1:
        return f"{s.name} ≡ {classes[0]} (mod {step})"
    return f"{s.name} mod {step} ∈ {{{', '.join(map(str, classes))}}}"


# ---- the training-memory peak ------------------------------------------------------------

def peak(candidates: list[tuple[Any, str]], minimum: dict[str, int]) -> list[tuple[Any, str]]:
    """The candidates (bytes held at some step, in preference order) that are not below
    another for every size: a candidate is dropped only where another one minus it is a sum
    of nonnegative terms times nonnegative coefficients on the sizes >= minimum, so the Max
    of what is left equals the Max of them all, exactly."""
    kept: list[tuple[Any, str, dict]] = []
    seen: set = set()
    signs: dict = {}  # monomial -> nonnegative on the sizes?

    def nonneg(mono: Any) -> bool:
        if mono not in signs:
            signs[mono] = _nonnegative(mono, minimum)
        return signs[mono]

    for e, where in candidates:  # the timelines' sums are already expanded
        if e in seen:
            continue
        seen.add(e)
        terms = sympy.sympify(e).as_coefficients_dict()
        if any(_dominates(t, terms, nonneg) for _, _, t in kept):
            continue
        kept = [k for k in kept if not _dominates(terms, k[2], nonneg)]
        kept.append((e, where, terms))
    return [(e, w) for e, w, _ in kept]


def _dominates(big: dict, small: dict, nonneg: Callable[[Any], bool]) -> bool:
    for mono in big.keys() | small.keys():
        diff = big.get(mono, 0) - small.get(mono, 0)
        if diff < 0 or (diff > 0 and not nonneg(mono)):
            return False
    return True


def _nonnegative(mono: Any, minimum: dict[str, int]) -> bool:
    """A product of sizes, floors and ceilings of increasing arguments, nonnegative at the
    minimum sizes (so everywhere above them), or of Piecewise terms of such."""
    if mono.is_Number:
        return mono >= 0
    for f in sympy.Mul.make_args(mono):
        base = f.base if f.is_Pow and f.exp.is_Integer and f.exp > 0 else f
        if base.is_Symbol:
            continue
        if isinstance(base, (sympy.floor, sympy.ceiling)):
            arg = sympy.expand(base.args[0])
            increasing = all(arg.coeff(s) >= 0 for s in arg.free_symbols)
            if increasing and evaluate(base, minimum) >= 0:
                continue
            return False
        if isinstance(base, sympy.Piecewise) and all(
                all(c >= 0 and _nonnegative(m, minimum)
                    for m, c in sympy.expand(v).as_coefficients_dict().items())
                for v, _ in base.args):
            continue
        return False
    return True


# ---- evaluating an analysis ----------------------------------------------------------------

def evaluate_analysis(a: Any, sizes: dict[str, Any]) -> Any:
    """Analysis.at: every symbolic quantity of `a` at the given sizes, exactly."""
    from netspec.ops.base import ShapeError  # noqa: F401  (the messages name shape errors)

    cond = a.sizes
    env = _sizes_env(cond, sizes)
    at = ", ".join(f"{k}={v}" for k, v in env.items())
    for c in cond.where:
        if not evaluate(c, env):
            raise NetspecError(Diagnostic(
                "error", f"{at} does not satisfy the spec's constraint `{c}`"))
    for c, message in cond.fit:
        if not evaluate(c, env):
            raise NetspecError(Diagnostic(
                "error", f"at {at}: {message}", None,
                f"this layer needs {c}; the smallest sizes are "
                + ", ".join(f"{k}={v}" for k, v in cond.minimum.items())))
    warnings = [Diagnostic("warning", message.replace(" unless ", " at " + at + ": ", 1)
                           if False else f"at {at}: {message}")
                for c, message in cond.rows if not evaluate(c, env)]
    cache: dict = {}

    def value(e: Any) -> Any:
        if e not in cache:
            v = evaluate(e, env)
            cache[e] = float(v) if isinstance(v, Fraction) else v
        return cache[e]

    out = _substitute(a, value)
    out = dataclasses.replace(out, layers=[_described(r) for r in out.layers])
    memory = out.memory
    if memory.peak_candidates:
        per_sample = [(value(e), w) for e, w in memory.peak_candidates]
        best = max(v for v, _ in per_sample)
        where = next(w for v, w in per_sample if v == best)
        memory = dataclasses.replace(memory, peak_at=where, peak_candidates=())
    return dataclasses.replace(out, memory=memory, sizes=None,
                               warnings=list(a.warnings) + warnings)


def _described(r: Any) -> Any:
    """A layer whose label showed sizes (`input 3xHxW`) relabelled at the sizes."""
    if r.attrs is None:
        return r
    from netspec.ops import REGISTRY

    return dataclasses.replace(r, label=REGISTRY[r.op].describe(r.attrs), attrs=None)


def _sizes_env(cond: SizeConditions, sizes: dict[str, Any]) -> dict[str, int]:
    unknown = [k for k in sizes if k not in cond.symbols]
    missing = [k for k in cond.symbols if k not in sizes]
    if unknown or missing:
        what = (f"unknown size {', '.join(unknown)}" if unknown
                else f"no value for {', '.join(missing)}")
        raise NetspecError(Diagnostic(
            "error", f"{what}: the sizes of this network are {', '.join(cond.symbols)}",
            None, "give each one: " + ",".join(f"{s}=224" for s in cond.symbols)))
    env = {}
    for k in cond.symbols:
        v = sizes[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise NetspecError(Diagnostic("error", f"size {k}={v!r} is not a positive integer"))
        env[k] = v
    return env


def _substitute(obj: Any, value: Callable[[Any], Any]) -> Any:
    """A copy of `obj` (dataclasses, tuples, lists, dicts) with every SymPy value replaced
    by value(it); block paths and parameter specs hold no sizes and are shared."""
    if isinstance(obj, sympy.Basic):
        return value(obj) if obj.free_symbols else _plain(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _substitute(getattr(obj, f.name), value)
                   for f in dataclasses.fields(obj)
                   if f.name not in _SHARED and f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, tuple):
        return tuple(_substitute(v, value) for v in obj)
    if isinstance(obj, list):
        return [_substitute(v, value) for v in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, value) for k, v in obj.items()}
    return obj


_SHARED = {"path", "frozen", "sizes", "warnings", "peak_candidates"}


def _plain(e: Any) -> Any:
    if e.is_Integer:
        return int(e)
    if e.is_Rational:
        return float(e)
    return e
