#!/usr/bin/env python3
"""Generates C tables, C enums and the options reference from the schema.

    qapi-gen.py -o OUTDIR qapi/qapi-schema.json   -> OUTDIR/qapi-types.h, OUTDIR/qapi-schema.c
    qapi-gen.py --doc FILE qapi/qapi-schema.json  -> FILE (docs/options.md)
    qapi-gen.py --check-doc FILE SCHEMA           -> exit 1 if FILE differs from what --doc writes

The schema syntax is QAPI's: one expression per definition, written as
Python-style literals with single-quoted strings, '#' comments, and a '##'
doc block before each definition. docs/devel/qapi.md describes it.
"""

import argparse
import os
import re
import sys

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# name -> (builtin kind, implied min, implied max)
BUILTINS = {
    'str': ('STR', None, None),
    'bool': ('BOOL', None, None),
    'number': ('NUMBER', None, None),
    'any': ('ANY', None, None),
    'size': ('SIZE', None, None),
    'int': ('INT', None, None),
    'int8': ('INT', -(1 << 7), (1 << 7) - 1),
    'int16': ('INT', -(1 << 15), (1 << 15) - 1),
    'int32': ('INT', -(1 << 31), (1 << 31) - 1),
    'int64': ('INT', None, None),
    'uint8': ('INT', 0, (1 << 8) - 1),
    'uint16': ('INT', 0, (1 << 16) - 1),
    'uint32': ('INT', 0, (1 << 32) - 1),
    # JSON trees hold int64; larger values cannot be represented.
    'uint64': ('INT', 0, INT64_MAX),
}

BUILTIN_DESCRIPTIONS = {
    'STR': 'string', 'BOOL': 'boolean', 'NUMBER': 'number',
    'SIZE': 'size', 'INT': 'integer', 'ANY': 'value',
}


class SchemaError(Exception):
    def __init__(self, where, msg):
        super().__init__('%s: %s' % (where, msg))


# ---------------------------------------------------------------------------
# Reading: tokens, expressions, doc blocks


class Reader:
    """Reads one schema file into (expression, doc, location) triples."""

    def __init__(self, path):
        self.path = path
        with open(path, encoding='utf-8') as f:
            self.text = f.read()
        self.pos = 0
        self.line = 1
        self.pending_doc = None

    def where(self):
        return '%s:%d' % (self.path, self.line)

    def error(self, msg):
        raise SchemaError(self.where(), msg)

    def _skip_space_and_comments(self):
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c == '\n':
                self.line += 1
                self.pos += 1
            elif c in ' \t\r':
                self.pos += 1
            elif c == '#':
                at_line_start = self.pos == 0 or text[self.pos - 1] == '\n'
                end = text.find('\n', self.pos)
                if end < 0:
                    end = len(text)
                if at_line_start and text[self.pos:end] == '##':
                    self._read_doc_block()
                else:
                    self.pos = end
            else:
                return

    def _read_doc_block(self):
        text = self.text
        start_line = self.line
        lines = []
        self.pos = text.find('\n', self.pos)
        while True:
            if self.pos < 0 or self.pos >= len(text):
                raise SchemaError('%s:%d' % (self.path, start_line),
                                  'unterminated doc block')
            self.pos += 1
            self.line += 1
            end = text.find('\n', self.pos)
            if end < 0:
                end = len(text)
            line = text[self.pos:end]
            self.pos = end
            if line == '##':
                break
            if not line.startswith('#'):
                self.error("doc block line must start with '#'")
            line = line[1:]
            if line.startswith(' '):
                line = line[1:]
            lines.append(line)
        if self.pending_doc is not None:
            self.error('doc block not followed by a definition')
        self.pending_doc = (lines, '%s:%d' % (self.path, start_line))

    def _token(self):
        self._skip_space_and_comments()
        if self.pos >= len(self.text):
            return None
        c = self.text[self.pos]
        if c in '{}[]:,':
            self.pos += 1
            return c
        if c == "'":
            end = self.text.find("'", self.pos + 1)
            if end < 0 or '\n' in self.text[self.pos:end]:
                self.error('unterminated string')
            s = self.text[self.pos + 1:end]
            self.pos = end + 1
            return ('str', s)
        m = re.compile(r'-?[0-9]+|true|false').match(self.text, self.pos)
        if m:
            self.pos = m.end()
            v = m.group(0)
            if v == 'true':
                return ('val', True)
            if v == 'false':
                return ('val', False)
            return ('val', int(v))
        self.error('unexpected character %r' % c)

    def _value(self, tok):
        if tok == '{':
            d = {}
            tok = self._token()
            if tok == '}':
                return d
            while True:
                if not isinstance(tok, tuple) or tok[0] != 'str':
                    self.error('expected a string key')
                key = tok[1]
                if key in d:
                    self.error("duplicate key '%s'" % key)
                if self._token() != ':':
                    self.error("expected ':'")
                d[key] = self._value(self._token())
                tok = self._token()
                if tok == '}':
                    return d
                if tok != ',':
                    self.error("expected ',' or '}'")
                tok = self._token()
        if tok == '[':
            lst = []
            tok = self._token()
            if tok == ']':
                return lst
            while True:
                lst.append(self._value(tok))
                tok = self._token()
                if tok == ']':
                    return lst
                if tok != ',':
                    self.error("expected ',' or ']'")
                tok = self._token()
        if isinstance(tok, tuple):
            return tok[1]
        self.error('expected a value')

    def expressions(self):
        while True:
            tok = self._token()
            if tok is None:
                if self.pending_doc is not None:
                    self.error('doc block at end of file')
                return
            where = self.where()
            if tok != '{':
                self.error('expected a definition')
            expr = self._value(tok)
            doc = self.pending_doc
            self.pending_doc = None
            yield expr, doc, where


def parse_doc(lines, where, name):
    """Returns (body text, {member: text}) from a doc block's lines."""
    if not lines or lines[0] != '@%s:' % name:
        raise SchemaError(where, "doc block must start with '@%s:'" % name)
    body = []
    members = {}
    current = None
    for line in lines[1:]:
        m = re.match(r'@([A-Za-z0-9_-]+):\s*(.*)$', line)
        if m:
            current = m.group(1)
            if current in members:
                raise SchemaError(where, "'@%s' documented twice" % current)
            members[current] = [m.group(2)]
        elif current is not None and line.startswith(' ') and line.strip():
            members[current].append(line.strip())
        elif not line.strip():
            if current is None:
                body.append('')
            current = None
        elif current is None:
            body.append(line.strip())
        else:
            raise SchemaError(where, "text after '@%s' must be indented" % current)
    paragraphs = []
    for para in '\n'.join(body).split('\n\n'):
        para = ' '.join(p for p in para.split('\n') if p)
        if para:
            paragraphs.append(para)
    return ('\n\n'.join(paragraphs),
            {k: ' '.join(v).strip() for k, v in members.items()})


# ---------------------------------------------------------------------------
# The model


class Type:
    def __init__(self, name, kind, doc='', where='<builtin>'):
        self.name = name
        self.kind = kind          # builtin, enum, struct, union, alternate, array
        self.doc = doc
        self.where = where
        self.builtin = None
        self.values = []          # enum: [(value, doc)]
        self.members = []         # struct, union (common)
        self.discriminator = None
        self.variants = []        # union: [(tag, Type)]; alternate: [(name, Type)]
        self.element = None
        self.prefix = None        # enum: C constant prefix
        self.resolved = False
        self.implicit = False     # made by the generator (command arguments, q_empty)

    def describe(self):
        if self.kind == 'builtin':
            return BUILTIN_DESCRIPTIONS[self.builtin]
        if self.kind == 'enum':
            return 'string'
        if self.kind in ('struct', 'union'):
            return 'object'
        if self.kind == 'array':
            return 'list'
        return self.name


class Member:
    def __init__(self, name, typeref, optional, doc, where):
        self.name = name
        self.typeref = typeref
        self.type = None
        self.optional = optional
        self.doc = doc
        self.where = where
        self.min = None
        self.max = None
        self.has_default = False
        self.default = None


class Command:
    def __init__(self, name, doc, where):
        self.name = name
        self.doc = doc
        self.where = where
        self.argref = None
        self.args = None          # struct or union Type
        self.retref = None
        self.returns = None       # Type


def camel_to_upper(name):
    out = ''
    for i, c in enumerate(name):
        if c.isupper() and i > 0:
            prev = name[i - 1]
            nxt = name[i + 1] if i + 1 < len(name) else ''
            if prev.islower() or prev.isdigit() or (prev.isupper() and nxt.islower()):
                out += '_'
        out += c
    return c_name(out).upper()


def c_name(name):
    return re.sub(r'[^A-Za-z0-9_]', '_', name)


class Schema:
    def __init__(self, path):
        self.types = {}
        self.order = []           # user-defined types in schema order
        self.files = []
        for name, (kind, lo, hi) in BUILTINS.items():
            t = Type(name, 'builtin')
            t.builtin = kind
            t.min, t.max = lo, hi
            self.types[name] = t
        self.commands = []
        self.raw = []
        self._read(os.path.abspath(path), set())
        # Argument type of commands without arguments (QEMU's name).
        empty = Type('q_empty', 'struct', 'No members.')
        empty.expr = {}
        empty.implicit = True
        self._add(empty)
        for expr, doc, where in self.raw:
            if 'command' in expr:
                self._define_command(expr, doc, where)
            else:
                self._define(expr, doc, where)
        for t in list(self.order):
            self._resolve(t)
        for c in self.commands:
            self._resolve_command(c)

    def _read(self, path, seen):
        if path in seen:
            return
        seen.add(path)
        self.files.append(path)
        reader = Reader(path)
        for expr, doc, where in reader.expressions():
            if 'include' in expr:
                if doc is not None:
                    raise SchemaError(where, 'include cannot have a doc block')
                self._read(os.path.join(os.path.dirname(path), expr['include']), seen)
            else:
                self.raw.append((expr, doc, where))

    def _add(self, t):
        if t.name in self.types:
            raise SchemaError(t.where, "'%s' is already defined" % t.name)
        self.types[t.name] = t
        self.order.append(t)

    def _define(self, expr, doc, where):
        kinds = [k for k in ('enum', 'struct', 'union', 'alternate') if k in expr]
        if len(kinds) != 1:
            raise SchemaError(where, 'expected one of enum, struct, union, alternate')
        kind = kinds[0]
        name = expr[kind]
        allowed = {'enum': {'enum', 'data', 'prefix'},
                   'struct': {'struct', 'data', 'base'},
                   'union': {'union', 'data', 'base', 'discriminator'},
                   'alternate': {'alternate', 'data'}}[kind]
        for key in expr:
            if key not in allowed:
                raise SchemaError(where, "%s '%s' has unknown key '%s'" % (kind, name, key))
        if doc is None:
            raise SchemaError(where, "'%s' has no doc block" % name)
        body, mdocs = parse_doc(doc[0], doc[1], name)
        t = Type(name, kind, body, where)
        t.expr = expr
        t.mdocs = mdocs
        t.doc_where = doc[1]
        t.alt_docs = {}
        if kind == 'enum':
            t.prefix = expr.get('prefix', camel_to_upper(name))
            for v in expr['data']:
                if v not in mdocs:
                    raise SchemaError(doc[1], "value '%s' of '%s' is not documented" % (v, name))
                t.values.append((v, mdocs.pop(v)))
        elif kind in ('struct', 'union'):
            if kind == 'struct':
                data = expr.get('data', {})
            else:
                data = {}
            for key, spec in data.items():
                t.members.append(self._member(key, spec, mdocs, where, name))
        elif kind == 'alternate':
            for key, spec in expr['data'].items():
                if key not in mdocs:
                    raise SchemaError(doc[1], "alternative '%s' of '%s' is not documented" % (key, name))
                t.alt_docs[key] = mdocs.pop(key)
                t.variants.append((key, spec))
        if mdocs and kind != 'union':
            raise SchemaError(doc[1], "'%s' documents unknown '@%s'" % (name, sorted(mdocs)[0]))
        self._add(t)

    def _define_command(self, expr, doc, where):
        name = expr['command']
        for key in expr:
            if key not in ('command', 'data', 'boxed', 'returns'):
                raise SchemaError(where, "command '%s' has unknown key '%s'" % (name, key))
        if doc is None:
            raise SchemaError(where, "'%s' has no doc block" % name)
        if any(c.name == name for c in self.commands):
            raise SchemaError(where, "command '%s' is already defined" % name)
        body, mdocs = parse_doc(doc[0], doc[1], name)
        c = Command(name, body, where)
        data = expr.get('data')
        if isinstance(data, dict):
            if expr.get('boxed'):
                raise SchemaError(where, "command '%s': 'boxed' needs a type name" % name)
            t = Type('q_obj_%s-arg' % name, 'struct', 'Arguments of %s.' % name, where)
            t.expr = {}
            t.implicit = True
            for key, spec in data.items():
                t.members.append(self._member(key, spec, mdocs, where, name))
            self._add(t)
            c.argref = t.name
        elif isinstance(data, str):
            c.argref = data
        elif data is None:
            c.argref = 'q_empty'
        else:
            raise SchemaError(where, "command '%s': 'data' must be a type name or members"
                              % name)
        if mdocs:
            raise SchemaError(doc[1], "'%s' documents unknown '@%s'" % (name, sorted(mdocs)[0]))
        c.retref = expr.get('returns', 'q_empty')
        self.commands.append(c)

    def _resolve_command(self, c):
        c.args = self._typeref(c.argref, c.where)
        if c.args.kind not in ('struct', 'union'):
            raise SchemaError(c.where, "command '%s': arguments must be a struct or union"
                              % c.name)
        c.returns = self._typeref(c.retref, c.where)

    def _member(self, key, spec, mdocs, where, owner):
        optional = key.startswith('*')
        name = key[1:] if optional else key
        if name not in mdocs:
            raise SchemaError(where, "member '%s' of '%s' is not documented" % (name, owner))
        m = Member(name, None, optional, mdocs.pop(name), where)
        if isinstance(spec, dict):
            for k in spec:
                if k not in ('type', 'default', 'min', 'max'):
                    raise SchemaError(where, "member '%s' has unknown key '%s'" % (name, k))
            m.typeref = spec['type']
            if 'default' in spec:
                if not optional:
                    raise SchemaError(where, "required member '%s' cannot have a default" % name)
                m.has_default = True
                m.default = spec['default']
            m.min = spec.get('min')
            m.max = spec.get('max')
        else:
            m.typeref = spec
        return m

    def _typeref(self, ref, where):
        if isinstance(ref, list):
            if len(ref) != 1:
                raise SchemaError(where, 'a list type names exactly one element type')
            elem = self._typeref(ref[0], where)
            name = elem.name + 'List'
            if name not in self.types:
                t = Type(name, 'array', 'A list of %s.' % elem.name, where)
                t.element = elem
                t.resolved = True
                self.types[name] = t
                self.order.append(t)
            return self.types[name]
        if ref not in self.types:
            raise SchemaError(where, "unknown type '%s'" % ref)
        return self.types[ref]

    def _resolve_members(self, t, members):
        for m in members:
            if m.type is not None:
                continue
            m.type = self._typeref(m.typeref, m.where)
            self._check_member(t, m)

    def _check_member(self, owner, m):
        mt = m.type
        if m.min is not None or m.max is not None:
            if mt.kind != 'builtin' or mt.builtin not in ('INT', 'SIZE'):
                raise SchemaError(m.where, "'%s': min/max only apply to integers" % m.name)
        if mt.kind == 'builtin' and mt.builtin == 'INT':
            lo = m.min if m.min is not None else mt.min
            hi = m.max if m.max is not None else mt.max
            if lo is not None or hi is not None:
                m.min = INT64_MIN if lo is None else lo
                m.max = INT64_MAX if hi is None else hi
        if mt.kind == 'builtin' and mt.builtin == 'SIZE' and (m.min is not None or m.max is not None):
            m.min = 0 if m.min is None else m.min
            m.max = INT64_MAX if m.max is None else m.max
        if m.min is not None and not (INT64_MIN <= m.min <= m.max <= INT64_MAX):
            raise SchemaError(m.where, "'%s': bad range" % m.name)
        if not m.has_default:
            return
        d = m.default
        ok = False
        if mt.kind == 'builtin':
            if mt.builtin == 'BOOL':
                ok = isinstance(d, bool)
            elif mt.builtin in ('INT', 'SIZE'):
                ok = isinstance(d, int) and not isinstance(d, bool)
                if ok and m.min is not None:
                    ok = m.min <= d <= m.max
                if ok and mt.builtin == 'SIZE':
                    ok = 0 <= d <= INT64_MAX
            elif mt.builtin == 'STR':
                ok = isinstance(d, str)
        elif mt.kind == 'enum':
            ok = d in [v for v, _ in mt.values]
        elif mt.kind == 'struct':
            ok = d == {}
        elif mt.kind == 'array':
            ok = d == []
        if not ok:
            raise SchemaError(m.where, "'%s': default %r does not fit type '%s'"
                              % (m.name, d, mt.name))

    def _base_members(self, t):
        base = t.expr.get('base')
        if base is None:
            return []
        if not isinstance(base, str) or base not in self.types:
            raise SchemaError(t.where, "'%s': base must name a struct" % t.name)
        b = self.types[base]
        if b.kind != 'struct':
            raise SchemaError(t.where, "'%s': base '%s' is not a struct" % (t.name, base))
        self._resolve(b)
        return b.members

    def _resolve(self, t):
        if t.resolved:
            return
        t.resolved = True
        if t.kind == 'struct':
            own = t.members
            self._resolve_members(t, own)
            t.members = list(self._base_members(t)) + own
            names = [m.name for m in t.members]
            for n in names:
                if names.count(n) > 1:
                    raise SchemaError(t.where, "'%s': member '%s' defined twice" % (t.name, n))
        elif t.kind == 'union':
            t.members = list(self._base_members(t))
            if not t.members:
                raise SchemaError(t.where, "union '%s' needs a base" % t.name)
            t.discriminator = t.expr.get('discriminator')
            tag = [m for m in t.members if m.name == t.discriminator]
            if not tag or tag[0].type.kind != 'enum' or tag[0].optional:
                raise SchemaError(t.where, "union '%s': discriminator must be a required "
                                  "enum member of the base" % t.name)
            values = [v for v, _ in tag[0].type.values]
            common = {m.name for m in t.members}
            for value, ref in t.expr['data'].items():
                if value not in values:
                    raise SchemaError(t.where, "union '%s': '%s' is not a value of '%s'"
                                      % (t.name, value, tag[0].type.name))
                vt = self._typeref(ref, t.where)
                if vt.kind != 'struct':
                    raise SchemaError(t.where, "union '%s': variant '%s' must be a struct"
                                      % (t.name, value))
                self._resolve(vt)
                for m in vt.members:
                    if m.name in common:
                        raise SchemaError(t.where, "union '%s': variant '%s' repeats member '%s'"
                                          % (t.name, value, m.name))
                t.variants.append((value, vt))
            if t.mdocs:
                raise SchemaError(t.doc_where, "'%s' documents unknown '@%s'"
                                  % (t.name, sorted(t.mdocs)[0]))
        elif t.kind == 'alternate':
            seen = set()
            resolved = []
            for name, ref in t.variants:
                at = self._typeref(ref, t.where)
                if at.kind in ('struct', 'union'):
                    jtype = 'object'
                elif at.kind == 'enum' or (at.kind == 'builtin' and at.builtin == 'STR'):
                    jtype = 'string'
                elif at.kind == 'builtin' and at.builtin == 'BOOL':
                    jtype = 'boolean'
                elif at.kind == 'builtin':
                    jtype = 'number'
                else:
                    raise SchemaError(t.where, "alternate '%s': '%s' cannot be an alternative"
                                      % (t.name, at.name))
                if jtype in seen:
                    raise SchemaError(t.where, "alternate '%s': two alternatives are JSON %s"
                                      % (t.name, jtype))
                seen.add(jtype)
                resolved.append((name, at))
            t.variants = resolved


# ---------------------------------------------------------------------------
# C output


def plain_doc(s):
    """Doc text for C tables: '@member' references lose the '@'."""
    return re.sub(r'@([A-Za-z0-9_-]+)', r'\1', s)


def md_doc(s):
    """Doc text for Markdown: '@member' references become code spans."""
    return re.sub(r'@([A-Za-z0-9_-]+)', r'`\1`', s).replace('|', '\\|')


def c_string(s):
    if s is None:
        return 'NULL'
    out = s.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
    return '"%s"' % out


def c_int(v):
    if v == INT64_MIN:
        return 'INT64_MIN'
    if v == INT64_MAX:
        return 'INT64_MAX'
    return 'INT64_C(%d)' % v


HEADER_NOTE = '/* Generated by scripts/qapi-gen.py from the qapi/ JSON schema. Do not edit. */\n'


def gen_header(schema):
    out = [HEADER_NOTE,
           '#ifndef QAPI_QAPI_TYPES_H\n#define QAPI_QAPI_TYPES_H\n\n',
           '#include "qapi/schema.h"\n']
    for t in schema.order:
        if t.kind != 'enum':
            continue
        out.append('\n/* %s */\ntypedef enum %s {\n' % (t.name, t.name))
        for i, (v, _) in enumerate(t.values):
            out.append('    %s_%s = %d,\n' % (t.prefix, c_name(v).upper(), i))
        out.append('    %s__MAX = %d,\n} %s;\n' % (t.prefix, len(t.values), t.name))
        out.append('extern const QapiEnumLookup %s_lookup;\n' % t.name)
    out.append('\n#endif\n')
    return ''.join(out)


def gen_source(schema):
    types = [schema.types[n] for n in BUILTINS] + schema.order
    index = {t.name: i for i, t in enumerate(types)}

    def ref(t):
        return '&qapi_schema_types[%d] /* %s */' % (index[t.name], t.name)

    out = [HEADER_NOTE, '#include "qapi/qapi-types.h"\n\n#include <stddef.h>\n']
    for t in types:
        cn = c_name(t.name)
        if t.kind == 'enum':
            out.append('\nstatic const char *const %s_values[] = {\n' % cn)
            out.extend('    %s,\n' % c_string(v) for v, _ in t.values)
            out.append('    NULL,\n};\n')
            out.append('static const char *const %s_docs[] = {\n' % cn)
            out.extend('    %s,\n' % c_string(plain_doc(d)) for _, d in t.values)
            out.append('};\n')
            out.append('const QapiEnumLookup %s_lookup = { %s_values, %d };\n'
                       % (t.name, cn, len(t.values)))
        if t.kind in ('struct', 'union') and t.members:
            out.append('\nstatic const QapiMember %s_members[] = {\n' % cn)
            for m in t.members:
                dk, ds, di = 'NONE', None, 0
                if m.has_default:
                    d = m.default
                    if isinstance(d, bool):
                        dk, di = 'BOOL', int(d)
                    elif isinstance(d, int):
                        dk, di = 'INT', d
                    elif isinstance(d, str):
                        dk, ds = 'STR', d
                    elif isinstance(d, dict):
                        dk = 'OBJECT'
                    else:
                        dk = 'ARRAY'
                has_range = m.min is not None
                out.append('    { .name = %s, .type = %s,\n'
                           '      .optional = %s, .has_range = %s, .min = %s, .max = %s,\n'
                           '      .default_kind = QAPI_DEFAULT_%s, .default_str = %s,'
                           ' .default_int = %s,\n'
                           '      .doc = %s },\n'
                           % (c_string(m.name), ref(m.type),
                              'true' if m.optional else 'false',
                              'true' if has_range else 'false',
                              c_int(m.min if has_range else 0),
                              c_int(m.max if has_range else 0),
                              dk, c_string(ds), c_int(di), c_string(plain_doc(m.doc))))
            out.append('};\n')
        if t.kind in ('union', 'alternate'):
            out.append('\nstatic const QapiVariant %s_variants[] = {\n' % cn)
            for name, vt in t.variants:
                out.append('    { %s, %s },\n' % (c_string(name), ref(vt)))
            out.append('};\n')

    out.append('\nconst QapiType qapi_schema_types[] = {\n')
    for t in types:
        cn = c_name(t.name)
        fields = ['.name = %s' % c_string(t.name),
                  '.kind = QAPI_KIND_%s' % t.kind.upper(),
                  '.builtin = QAPI_BUILTIN_%s' % (t.builtin or 'NONE'),
                  '.doc = %s' % c_string(plain_doc(t.doc))]
        if t.kind in ('struct', 'union') and t.members:
            fields.append('.members = %s_members' % cn)
            fields.append('.n_members = %d' % len(t.members))
        if t.kind == 'enum':
            fields.append('.lookup = &%s_lookup' % t.name)
            fields.append('.value_docs = %s_docs' % cn)
        if t.kind == 'union':
            fields.append('.discriminator = %s' % c_string(t.discriminator))
        if t.kind in ('union', 'alternate'):
            fields.append('.variants = %s_variants' % cn)
            fields.append('.n_variants = %d' % len(t.variants))
        if t.kind == 'array':
            fields.append('.element = %s' % ref(t.element))
        out.append('    {\n        %s,\n    },\n' % ',\n        '.join(fields))
    out.append('};\n\nconst int qapi_schema_n_types = %d;\n' % len(types))

    out.append('\nconst QapiCommand qapi_schema_commands[] = {\n')
    for c in schema.commands:
        out.append('    { .name = %s, .args = %s,\n      .returns = %s,\n      .doc = %s },\n'
                   % (c_string(c.name), ref(c.args), ref(c.returns),
                      c_string(plain_doc(c.doc))))
    if not schema.commands:
        out.append('    { .name = NULL },\n')
    out.append('};\n\nconst int qapi_schema_n_commands = %d;\n' % len(schema.commands))
    return ''.join(out)


# ---------------------------------------------------------------------------
# Documentation output

DOC_INTRO = """\
# ringblk options reference

This file is generated from the schema (`qapi/*.json`) by
`scripts/qapi-gen.py --doc`; edit the schema, not this file. A unit test
fails when it is out of date (regenerate with
`python3 scripts/qapi-gen.py --doc docs/options.md qapi/qapi-schema.json`).

## Writing options

Options are a tree of keys. Tools accept it in two spellings:

* **keyval**: `driver=file,filename=disk.img,cache.direct=on`. Dots nest
  keys (`cache.direct` is member `direct` of `cache`); a list is written
  with indices (`inject-error.0.iotype=read,inject-error.1.iotype=write`).
  A comma inside a value is doubled: `filename=a,,b.img` names `a,b.img`.
  Some options have an implied key, so that the first element may be just
  a value (`--object iothread,id=io0` means `qom-type=iothread`).
* **JSON**: `{"driver": "file", "filename": "disk.img", "cache": {"direct": true}}`,
  also as a pseudo-filename `json:{...}`. Text that starts with `{` or
  `json:` is JSON; anything else is keyval.

In keyval, values are converted by type: booleans accept `on`, `yes`,
`true`, `y` and `off`, `no`, `false`, `n`; integers are decimal, `0x` hex or
`0` octal, optionally negative; sizes are a non-negative number with an
optional binary suffix `B` (bytes), `k`, `M`, `G`, `T`, `P` or `E` (any
case), where a fraction needs a suffix (`1.5G`, `512k`, `0x1000`); sizes
stay below 2^63. In JSON, values have their JSON types and sizes are
plain integers.

An optional key that is absent takes the default shown below. Unknown
keys, values of the wrong type, values outside an enum or range, and
missing required keys are errors that name the full dotted key.

Tools print the keys of a driver with `help`, e.g.
`--blockdev driver=file,help`; the layout is the one QEMU uses.
"""


def anchor(name):
    return name.lower()


def doc_type_ref(t):
    if t.kind == 'builtin':
        return t.name
    if t.kind == 'array':
        return 'list of %s' % doc_type_ref(t.element)
    return '[%s](#%s)' % (t.name, anchor(t.name))


def doc_default(m):
    if not m.has_default:
        return 'required' if not m.optional else 'absent'
    d = m.default
    if isinstance(d, bool):
        return '`on`' if d else '`off`'
    if isinstance(d, dict):
        return 'defaults of its members'
    if isinstance(d, list):
        return 'empty'
    return '`%s`' % d


def member_rows(members):
    rows = ['| Key | Type | Default | Description |', '|---|---|---|---|']
    for m in members:
        desc = m.doc
        if m.min is not None and m.max == INT64_MAX and m.min != INT64_MIN:
            desc += ' (minimum: %d)' % m.min
        elif m.min is not None and not (m.min == INT64_MIN and m.max == INT64_MAX):
            desc += ' (range: %d to %d)' % (m.min, m.max)
        rows.append('| `%s` | %s | %s | %s |' % (m.name, doc_type_ref(m.type),
                                                  doc_default(m), md_doc(desc)))
    return rows


def gen_doc(schema):
    out = [DOC_INTRO]
    for t in schema.order:
        if t.kind == 'array' or t.implicit:
            continue
        out.append('\n## %s\n' % t.name)
        if t.doc:
            out.append('\n%s\n' % md_doc(t.doc))
        if t.kind == 'enum':
            out.append('\nEnum. Values:\n\n| Value | Description |\n|---|---|\n')
            for v, d in t.values:
                out.append('| `%s` | %s |\n' % (v, md_doc(d)))
        elif t.kind == 'struct':
            if t.members:
                out.append('\n' + '\n'.join(member_rows(t.members)) + '\n')
        elif t.kind == 'union':
            out.append('\nCommon members (from %s); `%s` selects the variant:\n\n'
                       % (doc_type_ref(schema.types[t.expr['base']]), t.discriminator))
            out.append('\n'.join(member_rows(t.members)) + '\n')
            out.append('\n| `%s` | Further members |\n|---|---|\n' % t.discriminator)
            for tag, vt in t.variants:
                out.append('| `%s` | %s |\n' % (tag, doc_type_ref(vt)))
        elif t.kind == 'alternate':
            out.append('\nOne of:\n\n')
            for name, at in t.variants:
                out.append('* %s (JSON %s): %s\n' % (doc_type_ref(at), at.describe(),
                                                     md_doc(t.alt_docs[name])))
    if schema.commands:
        out.append('\n## QMP commands\n\nThe commands the QMP monitor accepts, with their '
                   'arguments (`"arguments"`) and what they return.\n')
    for c in schema.commands:
        out.append('\n### %s\n' % c.name)
        if c.doc:
            out.append('\n%s\n' % md_doc(c.doc))
        if c.args.name == 'q_empty':
            out.append('\nArguments: none.\n')
        elif c.args.implicit:
            out.append('\nArguments:\n\n' + '\n'.join(member_rows(c.args.members)) + '\n')
        else:
            out.append('\nArguments: the members of %s.\n' % doc_type_ref(c.args))
        if c.returns.name == 'q_empty':
            out.append('\nReturns: an empty object.\n')
        else:
            out.append('\nReturns: %s.\n' % doc_type_ref(c.returns))
    return ''.join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('-o', '--output-dir')
    ap.add_argument('--doc')
    ap.add_argument('--check-doc')
    ap.add_argument('schema')
    args = ap.parse_args()
    try:
        schema = Schema(args.schema)
    except SchemaError as e:
        print('qapi-gen: %s' % e, file=sys.stderr)
        return 1
    if args.output_dir:
        for name, text in (('qapi-types.h', gen_header(schema)),
                           ('qapi-schema.c', gen_source(schema))):
            path = os.path.join(args.output_dir, name)
            with open(path, 'w', encoding='utf-8') as f:
                f.write(text)
    if args.doc:
        with open(args.doc, 'w', encoding='utf-8') as f:
            f.write(gen_doc(schema))
    if args.check_doc:
        with open(args.check_doc, encoding='utf-8') as f:
            if f.read() != gen_doc(schema):
                print('qapi-gen: %s is stale; regenerate it with\n'
                      '  python3 scripts/qapi-gen.py --doc %s %s'
                      % (args.check_doc, args.check_doc, args.schema), file=sys.stderr)
                return 1
        print('%s is up to date' % args.check_doc)
    return 0


if __name__ == '__main__':
    sys.exit(main())
