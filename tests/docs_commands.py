"""The shell commands of the READMEs and docs/, as a reader copies them: found in fenced
blocks, split into commands (continuations joined, comments and heredoc bodies dropped), and
sorted by what can be checked of them here (``tests/test_docs.py`` checks and runs them)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", REPO / "deploy" / "README.md", *sorted((REPO / "docs").glob("*.md")))
SHELL_LANGS = {"sh", "bash", "shell", "console"}
_FENCE = re.compile(r"^```(\w*)\s*$")
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str


@dataclass(frozen=True)
class Command:
    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def argv(self) -> list[str]:
        """The words of the command's first pipeline stage, its environment assignments left out."""
        words = shlex.split(self.text.split(" | ")[0], comments=True)
        while words and _ASSIGNMENT.match(words[0]):
            words.pop(0)
        return words

    @property
    def program(self) -> str:
        words = self.argv
        return words[0] if words else ""


def blocks(path: Path) -> list[Block]:
    found, lang, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = _FENCE.match(line)
        if match and lang is None:
            lang, start, lines = match.group(1), number + 1, []
        elif line.startswith("```") and lang is not None:
            found.append(Block(path, start, lang, "\n".join(lines)))
            lang = None
        elif lang is not None:
            lines.append(line)
    return found


def commands(block: Block) -> list[Command]:
    """One per command line: ``\\`` continuations joined, comment lines and heredoc bodies
    skipped, a trailing ``# comment`` dropped."""
    found: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        text = lines[i].rstrip()
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        heredoc = re.search(r"<<-?'?(\w+)'?", stripped)
        if heredoc:  # skip the body up to its terminator
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        found.append(Command(block.path, block.line + start, _without_comment(stripped)))
    return found


def _without_comment(text: str) -> str:
    """The command with a trailing ``# comment`` (outside quotes) removed."""
    quote = None
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and index > 0 and text[index - 1] in " \t":
            return text[:index].rstrip()
    return text


def all_shell_commands() -> list[Command]:
    return [c for path in DOCS for b in blocks(path) if b.lang in SHELL_LANGS for c in commands(b)]


def python_snippets() -> list[Block]:
    return [b for path in DOCS for b in blocks(path) if b.lang == "python"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    fence = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        if fence:
            continue
        match = re.match(r"#{1,6} (.*)", line)
        if match:
            base = slug(match.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link and image outside code."""
    found, fence = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        code_free = re.sub(r"`[^`]*`", "", line)
        found += [(number, m.group(1)) for m in re.finditer(r"\]\(([^)\s]+)\)", code_free)]
    return found
