"""The srs.conf grammar: nginx-style directives and blocks, comments, quotes, include.

`name args… ;` or `name args… { … }`; `#` starts a comment; arguments may be
quoted with " or '; a directive must end on the line it starts on, as in SRS;
`include a.conf b.conf;` splices files in place at any level.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


class ConfigError(Exception):
    """A config that cannot be used; the message names file:line, the directive and what to do."""


@dataclass
class Directive:
    """One `name args…;` or `name args… { children }`; `block` tells `name {}` from `name;`."""

    name: str
    args: list[str]
    children: list[Directive]
    file: str
    line: int
    block: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def arg(self, index: int = 0, default: str = "") -> str:
        return self.args[index] if len(self.args) > index else default


@dataclass
class _Token:
    text: str
    line: int
    quoted: bool = False


def _tokens(text: str, path: str) -> list[_Token]:
    out: list[_Token] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            out.append(_Token("\n", line))
            line += 1
            i += 1
        elif c.isspace():
            # Any Unicode space, not just ASCII: configs pasted from web pages
            # (the seeds among them) carry no-break spaces.
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in ";{}":
            out.append(_Token(c, line))
            i += 1
        elif c in "\"'":
            end = text.find(c, i + 1)
            if end < 0:
                raise ConfigError(f"{path}:{line}: unterminated quoted string; add the closing {c}")
            value = text[i + 1 : end]
            if "\n" in value:
                raise ConfigError(f"{path}:{line}: quoted string spans lines; close the {c} on the same line")
            out.append(_Token(value, line, quoted=True))
            i = end + 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in ";{}#\"'":
                i += 1
            out.append(_Token(text[start:i], line))
    return out


def _include_path(name: str, including: str) -> str:
    """Relative to the including file; failing that, to the working directory.

    SRS itself opens include paths as given, so its own configs write
    `include ./conf/x.conf;` relative to where the server runs; tidecast also
    takes a path next to the including file, which keeps a config directory
    (a ConfigMap mount) self-contained.
    """
    if os.path.isabs(name) or including == "<string>":
        return name
    beside = os.path.join(os.path.dirname(including), name)
    if os.path.exists(beside) or not os.path.exists(name):
        return beside
    return name


MAX_CONFIG_FILE_BYTES = 4 * 1024 * 1024


class _NotAFile(Exception):
    pass


def _read_regular_file(path: str) -> bytes:
    """A config file's bytes. Opened without blocking and checked before reading: a FIFO or a device
    named by an include would otherwise hang the parse (and a reload) for ever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotAFile("not a regular file (a FIFO, a device or a directory?); name a config file")
        if info.st_size > MAX_CONFIG_FILE_BYTES:
            raise _NotAFile(f"{info.st_size} bytes is over the {MAX_CONFIG_FILE_BYTES}-byte limit of a config file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_CONFIG_FILE_BYTES + 1)
    finally:
        os.close(fd)


def parse_file(path: str, _seen: tuple[str, ...] = (), _include: str = "") -> list[Directive]:
    """The directives of `path`, includes spliced in; `_include` is the "file:line" that included it."""
    where = f'{_include}: include "{path}"' if _include else path
    real = os.path.realpath(path)
    if real in _seen:
        raise ConfigError(f"{where}: the file includes itself (through {' -> '.join(_seen)}); remove the loop")
    try:
        text = _read_regular_file(path).decode("utf-8")
    except _NotAFile as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    return parse_text(text, path, (*_seen, real))


def parse_text(text: str, path: str = "<string>", _seen: tuple[str, ...] = ()) -> list[Directive]:
    tokens = _tokens(text, path)
    root: list[Directive] = []
    stack: list[tuple[Directive | None, list[Directive]]] = [(None, root)]
    current: list[_Token] = []
    for tok in tokens:
        if tok.text == "\n" and not tok.quoted:
            if current:
                raise ConfigError(
                    f'{path}:{current[0].line}: directive "{current[0].text}" does not end on its line; '
                    'add ";" (or "{" to open a block) before the line break'
                )
            continue
        if tok.quoted or tok.text not in ";{}":
            current.append(tok)
            continue
        if tok.text == "}":
            if current:
                raise ConfigError(
                    f'{path}:{current[0].line}: directive "{current[0].text}" is missing its ";" before "}}"'
                )
            if len(stack) == 1:
                raise ConfigError(f'{path}:{tok.line}: unexpected "}}" with no block open; remove it')
            stack.pop()
            continue
        if not current:
            raise ConfigError(f'{path}:{tok.line}: "{tok.text}" without a directive name before it')
        name, args = current[0].text, [t.text for t in current[1:]]
        directive = Directive(name, args, [], path, current[0].line, block=tok.text == "{")
        current = []
        siblings = stack[-1][1]
        if name == "include" and tok.text == ";":
            if not args:
                raise ConfigError(f"{path}:{directive.line}: include needs at least one file name")
            for inc in args:
                siblings.extend(parse_file(_include_path(inc, path), _seen, directive.where))
            continue
        siblings.append(directive)
        if tok.text == "{":
            stack.append((directive, directive.children))
    if current:
        raise ConfigError(f'{path}:{current[0].line}: directive "{current[0].text}" is missing its ";" at the end')
    if len(stack) > 1:
        opened = stack[-1][0]
        assert opened is not None
        raise ConfigError(f'{path}:{opened.line}: unterminated block "{opened.name}" opened here; add the closing "}}"')
    return root
