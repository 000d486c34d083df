#!/usr/bin/env python3
# Prints stub text (Any-typed) for native classes of canx._canx from their runtime
# signatures: a starting point when a native class is added (then tighten the types).
#   .venv/bin/python scripts/stubgen-native.py ClassName...
"""Prints stub text for native classes from their runtime signatures (Any-typed)."""
import inspect, sys
import canx._canx as m

def sig(f, skip_self=True):
    try:
        s = inspect.signature(f)
    except (ValueError, TypeError):
        return "(self, *args: Any, **kwargs: Any)"
    parts = []
    star_done = False
    for p in s.parameters.values():
        t = p.name
        if p.kind == p.VAR_POSITIONAL:
            t = "*" + t + ": Any"; star_done = True
        elif p.kind == p.VAR_KEYWORD:
            t = "**" + t + ": Any"
        else:
            if p.kind == p.KEYWORD_ONLY and not star_done:
                parts.append("*"); star_done = True
            if p.name not in ("self", "cls", "$self", "$cls"):
                t += ": Any"
            if p.default is not p.empty:
                t += " = ..."
        if p.kind == p.POSITIONAL_ONLY and p.name in ("self", "$self"):
            t = "self"
        parts.append(t.replace("$", ""))
        if p.kind == p.POSITIONAL_ONLY:
            pass
    txt = ", ".join(parts)
    pos_only = [p for p in s.parameters.values() if p.kind == p.POSITIONAL_ONLY and p.name.lstrip("$") not in ("self", "cls")]
    if pos_only:
        # add "/" after last positional-only
        names = [p.name for p in s.parameters.values()]
        idx = names.index(pos_only[-1].name)
        parts.insert(idx + 1, "/")
        txt = ", ".join(parts)
    return "(" + txt + ")"

for name in sys.argv[1:]:
    cls = getattr(m, name)
    if not cls.__flags__ & (1 << 10):  # Py_TPFLAGS_BASETYPE unset: not subclassable
        print("\n@final")
        print(f"class {name}:")
    else:
        print(f"\n@disjoint_base\nclass {name}:")
    try:
        s = inspect.signature(cls)
        params = str(sig(cls))[1:-1]
        print(f"    def __new__(cls{', ' if params else ''}{params}) -> {name}: ...")
    except (ValueError, TypeError):
        pass
    for k, v in sorted(vars(cls).items()):
        if k.startswith("__") and k not in ("__getitem__", "__setitem__", "__len__", "__bytes__", "__delitem__", "__iter__", "__next__", "__aiter__", "__enter__", "__exit__", "__eq__", "__hash__", "__repr__", "__contains__"):
            continue
        if isinstance(v, staticmethod) or type(v).__name__ == "staticmethod":
            print(f"    @staticmethod\n    def {k}{sig(getattr(cls, k))} -> Any: ...")
        elif type(v).__name__ in ("getset_descriptor", "member_descriptor", "property"):
            print(f"    {k}: Any")
        elif callable(v) or type(v).__name__ in ("method_descriptor", "wrapper_descriptor", "classmethod_descriptor", "builtin_function_or_method"):
            s2 = sig(v)
            if not s2.startswith("(self"):
                s2 = "(self" + (", " if s2 != "()" else "") + s2[1:]
            print(f"    def {k}{s2} -> Any: ...")
        else:
            print(f"    {k}: Any")
