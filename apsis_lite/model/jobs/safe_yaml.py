"""Reading a job file's YAML safely: the loader, and the limits on what a document may be.

The loader is PyYAML's safe one (libyaml's when built with it) without YAML
1.1's base-60 numbers, whose constructors report a bad value at its line.
A composed document is refused if aliases would blow it up or it nests too
deeply, before anything is constructed from it (see docs/limits.md).
"""

import re

import yaml


try:  # libyaml's parser is several times faster; the safe constructors are the same
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader


class _Loader(_BaseLoader):
    """The safe loader without YAML 1.1's base-60 numbers.

    YAML 1.1 reads ``daytime: 17:00`` as the integer 1020 and ``9:30:15`` as
    34215; job files mean times of day, so those stay text (as in YAML 1.2).
    """


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_INT, re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT, re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _constructing(what):
    """A constructor of the safe loader whose ValueError becomes a YAML error at the value's line."""
    construct = _BaseLoader.yaml_constructors[f"tag:yaml.org,2002:{what}"]

    def checked(loader, node):
        try:
            return construct(loader, node)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            # Also explicit tags on what they cannot read: !!timestamp x, !!bool 2.
            value = node.value if isinstance(node.value, str) else ""
            hint = "; quote it to keep it as text" if what == "timestamp" else ""
            why = f"{exc}{hint}" if isinstance(exc, ValueError) and str(exc) else hint.lstrip("; ")
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {_YAML_WHAT[what]}: {value[:40]!r}" + (f" ({why})" if why else ""),
                node.start_mark) from None
    return checked


_YAML_WHAT = {"timestamp": "date or time", "int": "number", "float": "number",
              "bool": "true or false", "binary": "base64 value"}
for _what in _YAML_WHAT:
    _Loader.add_constructor(f"tag:yaml.org,2002:{_what}", _constructing(_what))


# What a document may be: a few lines of aliases can stand for billions of
# values, and deep nesting exhausts the parser's stack.
MAX_YAML_DEPTH = 100          # mappings and lists nested in each other
MAX_ALIAS_NODES = 100_000     # values that aliases (*name) add to a document, all told


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"not valid YAML: {exc}"
    problem = exc.problem or "bad syntax"
    context = getattr(exc, "context", None)
    if context:
        problem += f" ({context})"
    return f"not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {problem}"


class _YamlLimit(Exception):
    """A document past MAX_YAML_DEPTH or MAX_ALIAS_NODES, or a recursive alias."""


def _yaml_children(node):
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return ()


def _check_yaml_nodes(root):
    """Refuse a composed document that aliases would blow up, or that nests too deeply.

    Walks the node graph once (aliases are shared nodes), computing for each
    node its depth and how many nodes it stands for once every alias is
    expanded: a "billion laughs" document of a few lines stands for 10**9.
    An alias inside its own anchor (a cycle) is refused too.
    """
    size, height, open_ = {}, {}, set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            kids = _yaml_children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if height[key] > MAX_YAML_DEPTH:
                raise _YamlLimit(_at(node, f"nested more than {MAX_YAML_DEPTH} deep"))
            continue
        if key in size:
            continue  # an alias of a node already measured
        open_.add(key)
        stack.append((node, True))
        for kid in _yaml_children(node):
            if id(kid) in open_:
                raise _YamlLimit(_at(kid, "this anchor is used inside itself (a recursive alias)"))
            if id(kid) not in size:
                stack.append((kid, False))
    added = size[id(root)] - len(size)
    if added > MAX_ALIAS_NODES:
        raise _YamlLimit(f"aliases expand to {added:,} more values (at most {MAX_ALIAS_NODES:,})")


def _check_yaml_depth(root):
    """``_check_yaml_nodes`` for a document without anchors (a tree): only its depth can be wrong."""
    level, depth = [root], 1
    while level:
        if depth > MAX_YAML_DEPTH:
            raise _YamlLimit(_at(level[0], f"nested more than {MAX_YAML_DEPTH} deep"))
        deeper = []
        for node in level:
            if type(node) is yaml.MappingNode:
                for key, value in node.value:
                    if type(key) is not yaml.ScalarNode:
                        deeper.append(key)
                    if type(value) is not yaml.ScalarNode:
                        deeper.append(value)
            elif type(node) is yaml.SequenceNode:
                deeper.extend(n for n in node.value if type(n) is not yaml.ScalarNode)
        level, depth = deeper, depth + 1


# Where an anchor (&name) may be: an '&' not inside a word. Most job files
# have none (a shell's '&&' or '2>&1' is taken for one, which only costs the
# full check), so they are spared walking the node graph twice.
_MAYBE_ANCHOR = re.compile(rb"(?<![A-Za-z0-9_.\-])&")


def _at(node, msg):
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}: {msg}" if mark else msg


def _load_yaml(data: bytes):
    """The document in ``data``: safe YAML, within the limits above; None if empty."""
    loader = _Loader(data)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if b"&" in data and _MAYBE_ANCHOR.search(data):
            _check_yaml_nodes(node)
        else:
            _check_yaml_depth(node)
        try:
            return loader.construct_document(node)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # a constructor taken aback by an explicit tag
            raise yaml.constructor.ConstructorError(None, None, f"cannot read a value: {exc}") from None
    finally:
        loader.dispose()
