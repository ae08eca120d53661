"""The OS rule checker: gold-free review of a shell command before it runs, and hindsight hooks.

:class:`OSRuleChecker` reads only the task's instruction, the dialogue and the live sandbox (never
the payload), so it is usable at inference time. For a ``bash`` action, in order:

1. a malformed action is rejected with the parser's message;
2. the command is split into simple commands (quotes, pipes, ``&&``/``;``/``&``, ``$(...)``,
   redirections and here-documents understood; :func:`simple_commands`) and rejected when it is
   * **destructive outside the working tree**: ``rm -r`` of ``/``, ``/*`` or a system directory
     (``/usr``, ``/etc``, ``/bin``, ``/lib``, ...), ``find / -delete``, ``chmod``/``chown -R`` of one,
     ``mkfs``, ``dd of=/dev/...``, a fork bomb, ``kill -9 -1``, ``shutdown``/``reboot``/``halt``;
   * **endless** without ``&`` or ``timeout``: ``yes`` not piped into a reader, ``tail -f``,
     ``sleep`` longer than the command time limit, ``while true``/``until false``/``for ((;;))``
     without ``break``/``exit``, ``watch``, ``top`` without ``-b -n``, ``ping`` without ``-c``,
     servers (``nc -l``, ``python3 -m http.server``);
   * **interactive** (waits for input that never comes): editors (``vi``, ``nano``, ...), pagers
     (``less``, ``more``, ``man``), ``read`` without a redirect or pipe, ``python3``/``bash`` with
     no script, ``su`` without ``-c``, ``passwd``, ``ssh``/``ftp``/``telnet``;
3. one call into the sandbox (:meth:`~cmat_gym.domains.os.backend.ShellSandbox.run_script`, never
   the host) parses the command with bash's own parser (``set -n``: read, never execute) and looks
   up with ``command -v`` every program the command names that is not a builtin, a function or
   alias it (or an earlier command) defines, or a path: a syntax error is rejected with bash's
   message, a missing program with a suggestion (``sudo``: you are root already).

Feedback names the fix ("add ``| head -n 20``", "run it with ``timeout 5 ...`` or in the background
with ``&``", "``foo`` is not installed; use ..."). A final ``answer`` before any command ran is
approved with a low score; ``finish`` on a question task (the instruction asks "how many", "what",
"which", "tell me", ...) is rejected: "the task asks a question: answer(...)".

Cost: bash's verdict on a command text and every program found under ``/usr`` are cached for the
process, so a review costs at most one sandbox round trip (~2 ms), none for a command seen before.

:class:`OSHooks` gives the CMAT loop its hindsight: an executed command was fine when it exited 0
and did not time out. A shell has no dry run (a command's effects cannot be rolled back), so
``dry_run_ok`` and ``dry_run_text`` return None.
"""

from __future__ import annotations

import re
import shlex
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cmat_gym.core.actions import ANSWER, ActionError, ParsedAction
from cmat_gym.core.checking import Checker, DomainHooks, Turn, Verdict, parsed_or_parse
from cmat_gym.core.task import Task

if TYPE_CHECKING:
    from cmat_gym.core.env import TextEnv
    from cmat_gym.domains.os.backend import ShellSandbox

# Directories a command may put its own programs in (env.py puts them on the agent's PATH).
USER_BIN_PATH = "/root/bin:/root/.local/bin"

# ---------------------------------------------------------------------------- shell words
_PUNCT = "();<>|&\n"
KEYWORDS = frozenset(
    {
        "if",
        "then",
        "else",
        "elif",
        "fi",
        "do",
        "done",
        "while",
        "until",
        "for",
        "case",
        "esac",
        "in",
        "function",
        "select",
        "time",
        "!",
        "{",
        "}",
        "[[",
        "]]",
        "coproc",
    }
)
_SKIP_SEGMENT = frozenset({"for", "case", "select", "function", "in", "esac", ";;"})
_LEADING_KEYWORDS = frozenset(
    {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "fi", "done", "[[", "coproc"}
)
BUILTINS = frozenset(
    {
        ".",
        ":",
        "[",
        "alias",
        "bg",
        "bind",
        "break",
        "builtin",
        "caller",
        "cd",
        "command",
        "compgen",
        "complete",
        "compopt",
        "continue",
        "declare",
        "dirs",
        "disown",
        "echo",
        "enable",
        "eval",
        "exec",
        "exit",
        "export",
        "false",
        "fc",
        "fg",
        "getopts",
        "hash",
        "help",
        "history",
        "jobs",
        "kill",
        "let",
        "local",
        "logout",
        "mapfile",
        "popd",
        "printf",
        "pushd",
        "pwd",
        "read",
        "readarray",
        "readonly",
        "return",
        "set",
        "shift",
        "shopt",
        "source",
        "suspend",
        "test",
        "times",
        "trap",
        "true",
        "type",
        "typeset",
        "ulimit",
        "umask",
        "unalias",
        "unset",
        "wait",
    }
)
_VALUE_OPTIONS = ("-n", "-u", "-g", "-s", "-k")  # wrapper options that take a value
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_PROGRAM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_DEFINED = (
    re.compile(r"(?:^|[\s;&|(){}])(?:function\s+)?([A-Za-z_][\w.:-]*)\s*\(\s*\)"),
    re.compile(r"\bfunction\s+([A-Za-z_][\w.:-]*)"),
    re.compile(r"\balias\s+([A-Za-z_][\w.:-]*)="),
)
_HEREDOC = re.compile(r"(?<![<$(])<<(-?)[ \t]*(['\"]?)([A-Za-z0-9_.-]+)\2")


@dataclass(frozen=True)
class SimpleCommand:
    """One simple command of a command line, as far as a static reading can tell.

    Attributes:
        words: the program and its arguments (assignments, keywords, wrappers and redirection
            targets removed).
        wrappers: the wrappers it ran under, in order (``sudo``, ``timeout``, ``nohup``, ...).
        background: ends with a lone ``&``.
        piped_in: its stdin comes from a pipe.
        piped_out: its stdout goes into a pipe.
        redirected_in: it has a ``<``, ``<<`` or ``<<<`` redirection.
    """

    words: tuple[str, ...]
    wrappers: tuple[str, ...] = ()
    background: bool = False
    piped_in: bool = False
    piped_out: bool = False
    redirected_in: bool = False

    @property
    def program(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def args(self) -> tuple[str, ...]:
        return self.words[1:]

    @property
    def bounded(self) -> bool:
        """Whether it cannot block the shell: in the background, or under ``timeout``."""
        return self.background or "timeout" in self.wrappers


def strip_heredocs(text: str) -> str:
    """``text`` without the bodies of its here-documents (their text is data, not commands)."""
    if "<<" not in text:
        return text
    out: list[str] = []
    pending: list[tuple[str, bool]] = []
    for line in text.split("\n"):
        if pending:
            delim, dash = pending[0]
            if (line.lstrip("\t") if dash else line) == delim:
                pending.pop(0)
            continue
        out.append(line)
        pending.extend((m.group(3), m.group(1) == "-") for m in _HEREDOC.finditer(line))
    return "\n".join(out)


def strip_comments(text: str) -> str:
    """``text`` without ``# comments`` (a ``#`` that starts a word outside quotes, to the line end)."""
    if "#" not in text:
        return text
    out: list[str] = []
    quote, escaped, i, n = "", False, 0, len(text)
    while i < n:
        c = text[i]
        if escaped:
            escaped = False
        elif c == "\\" and quote != "'":
            escaped = True
        elif quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=_PUNCT)
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # an unclosed quote: bash's parser reports it; a rough split is enough here
        return re.findall(r"[();<>|&\n]+|[^\s();<>|&]+", text)


def _is_redirect(token: str) -> bool:
    return set(token) <= set("<>&") and ("<" in token or ">" in token)


def simple_commands(text: str) -> list[SimpleCommand]:
    """The simple commands of a command line, in order (see :class:`SimpleCommand`)."""
    tokens = _tokens(strip_comments(strip_heredocs(text)))
    commands: list[SimpleCommand] = []
    words: list[str] = []
    redirected_in = piped_in = False
    skip_next = in_array = False
    pipeline = 0  # index of the first command of the current pipeline
    for token in tokens + [";"]:
        if in_array:  # the values of `name=(a b c)` are words, not a command
            in_array = ")" not in token
            continue
        if token.startswith("(") and words and words[-1].endswith("=") and _ASSIGNMENT.match(words[-1]):
            in_array = ")" not in token
            continue
        if skip_next:
            skip_next = False
            if not (set(token) <= set(_PUNCT)):
                continue
        if set(token) <= set(_PUNCT):
            if _is_redirect(token):
                if words and words[-1].isdigit():
                    words.pop()  # the fd number of "2>&1"
                redirected_in = redirected_in or "<" in token
                skip_next = True
                continue
            piped_out = "|" in token and "||" not in token
            background = re.search(r"(?<![&>|])&(?![&>])", token) is not None
            command = _simplify(words, background, piped_in, piped_out, redirected_in)
            if command is not None:
                commands.append(command)
            if background:  # `a | b &` puts the whole pipeline in the background
                commands[pipeline:] = [replace(c, background=True) for c in commands[pipeline:]]
            if not piped_out:
                pipeline = len(commands)
            words, redirected_in, piped_in = [], False, piped_out
            continue
        words.append(token)
    return commands


def _simplify(
    words: list[str], background: bool, piped_in: bool, piped_out: bool, redirected_in: bool
) -> SimpleCommand | None:
    wrappers: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in _SKIP_SEGMENT:
            return None
        if word in _LEADING_KEYWORDS or _ASSIGNMENT.match(word):
            i += 1
        elif word in (
            "sudo",
            "nohup",
            "exec",
            "builtin",
            "nice",
            "stdbuf",
            "env",
            "time",
            "timeout",
            "command",
        ):
            if word == "command" and i + 1 < len(words) and words[i + 1].startswith("-"):
                break  # `command -v x`: a lookup, not a run of x
            wrappers.append(word)
            i += 1
            while i < len(words) and (
                words[i].startswith("-") or (word == "env" and _ASSIGNMENT.match(words[i]))
            ):
                takes_value = word in ("nice", "sudo", "timeout") and words[i] in _VALUE_OPTIONS
                i += 2 if takes_value else 1
            if word == "timeout" and i < len(words):
                i += 1  # the duration
        else:
            break
    rest = tuple(words[i:])
    if not rest and not wrappers:
        return None
    return SimpleCommand(rest, tuple(wrappers), background, piped_in, piped_out, redirected_in)


def defined_names(texts: Iterable[str]) -> set[str]:
    """Names defined as shell functions or aliases anywhere in ``texts``."""
    names: set[str] = set()
    for text in texts:
        if "(" in text or "function" in text or "alias" in text:
            for pattern in _DEFINED:
                names.update(pattern.findall(text))
    return names


def program_names(text: str, defined: set[str] | None = None) -> list[str]:
    """The external programs a command line runs (builtins, keywords, functions and aliases it
    defines, paths and dynamic names like ``$CMD`` left out), in order of first use."""
    defined = defined_names([text]) if defined is None else defined
    seen: dict[str, None] = {}
    for command in simple_commands(text):
        for name in (*command.wrappers, command.program):
            if (
                name
                and name not in BUILTINS
                and name not in KEYWORDS
                and name not in defined
                and _PROGRAM_NAME.match(name)
            ):
                seen.setdefault(name, None)
    return list(seen)


# ---------------------------------------------------------------------------- static rules
SYSTEM_DIRS = frozenset(
    {
        "/",
        "/usr",
        "/etc",
        "/bin",
        "/sbin",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/boot",
        "/var",
        "/dev",
        "/proc",
        "/sys",
        "/opt",
        "/srv",
        "/run",
        "/snap",
    }
)
_FORK_BOMB = re.compile(r"([A-Za-z_:][\w:]*)\s*\(\s*\)\s*\{[^}]*\1\s*\|\s*\1\s*&")
_ENDLESS_LOOP = re.compile(
    r"\b(?:while\s+(?:true|:|\[\s*1\s*\]|\(\(\s*1\s*\)\))\s*;?\s*do|until\s+false\s*;?\s*do|"
    r"for\s*\(\(\s*;\s*;\s*\)\))"
)
_LOOP_EXIT = re.compile(r"\b(break|exit|return)\b")
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([smhd]?)$")
_EDITORS = frozenset(
    {"vi", "vim", "view", "nvim", "nano", "emacs", "pico", "joe", "jed", "mcedit", "ed", "ex"}
)
_PAGERS = frozenset({"less", "more", "most", "man", "pg"})
_REMOTE = frozenset({"ssh", "telnet", "ftp", "sftp", "mysql", "psql"})
_SHELLS = frozenset(
    {"python", "python3", "bash", "sh", "dash", "zsh", "node", "irb", "perl", "sqlite3", "bc"}
)
_POWER = frozenset({"shutdown", "reboot", "halt", "poweroff", "telinit"})
_SUGGEST = {
    "sudo": "you are root already: drop `sudo`",
    "python": "use `python3`",
    "pip": "use `python3 -m pip` (there is no network, so nothing can be downloaded)",
    "apt": "there is no network, so packages cannot be installed; use the tools that are there",
    "apt-get": "there is no network, so packages cannot be installed; use the tools that are there",
    "ifconfig": "use `ip addr`",
    "netstat": "use `ss`",
    "systemctl": "there is no init system: start the program directly, in the background with `&`",
    "service": "there is no init system: start the program directly, in the background with `&`",
    "tree": "use `find DIR`",
    "vim": "edit files with `sed -i`, `printf ... > file` or `cat > file <<'EOF'`",
}
_EDIT_HINT = "edit files with `sed -i`, `printf ... > file` or `cat > file <<'EOF' ... EOF`"
_BOUND_HINT = "run it with `timeout 5 ...` or in the background with `&`"


def _targets_system(args: Sequence[str]) -> str | None:
    for arg in args:
        if arg.startswith("-"):
            continue
        path = arg
        for suffix in ("/*", "/.", "/"):
            if path.endswith(suffix) and len(path) > len(suffix):
                path = path[: -len(suffix)]
        if path in ("/*", "/.", "/..") or path in SYSTEM_DIRS:
            return arg
    return None


def _short_flags(args: Sequence[str]) -> str:
    return "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))


def _seconds(args: Sequence[str]) -> float:
    total = 0.0
    for arg in args:
        if arg in ("inf", "infinity"):
            return float("inf")
        match = _DURATION.match(arg)
        if match:
            total += float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return total


def static_problem(text: str, timeout_s: float = 5.0) -> str | None:
    """Why the command line must not run (destructive, endless or interactive), or None."""
    if _FORK_BOMB.search(text):
        return "this is a fork bomb: it would fill the process table; run only the commands the task needs"
    commands = simple_commands(text)
    bare = strip_comments(strip_heredocs(text))
    loop = _ENDLESS_LOOP.search(bare)
    if loop and not _LOOP_EXIT.search(bare) and not bare.rstrip().endswith("&") and "timeout" not in bare:
        return (
            f"`{loop.group(0).strip()}` never ends without a `break`: add a condition that stops it, "
            f"or {_BOUND_HINT}"
        )
    for command in commands:
        problem = _destructive(command) or _endless(command, timeout_s) or _interactive(command, text)
        if problem:
            return problem
    return None


def _destructive(command: SimpleCommand) -> str | None:
    program, args = command.program, command.args
    name = " ".join(command.words[:4])
    if program == "rm" and ("r" in _short_flags(args).lower() or "--recursive" in args):
        target = _targets_system(args)
        if target:
            return (
                f"`{name}` would delete the system directory {target}: delete only the files the task "
                "names, inside the working tree (/root, /home, /tmp)"
            )
    if program == "find" and "-delete" in args and _targets_system(args[:1]):
        return (
            f"`find {args[0]} ... -delete` would delete files all over the system: "
            "search a narrower directory"
        )
    if program in ("chmod", "chown", "chgrp") and ("R" in _short_flags(args) or "--recursive" in args):
        target = _targets_system(args)
        if target:
            return (
                f"`{name}` would change every file under the system directory {target}: change only "
                "the files the task names"
            )
    if program.startswith("mkfs") or program in ("mke2fs", "wipefs", "fdisk", "sfdisk", "parted"):
        return f"`{program}` would format a disk: never run it here"
    if program == "dd":
        for arg in args:
            if arg.startswith("of=/dev/") and arg not in ("of=/dev/null", "of=/dev/stdout", "of=/dev/stderr"):
                return f"`dd {arg}` would overwrite a device: write to a file (`of=/tmp/out`) instead"
    if program == "kill" and ("-1" in args[1:]):
        return f"`{name}` would kill every process: kill only the PIDs the task names (find them with `ps`)"
    if program in ("killall5",):
        return "`killall5` would kill every process: kill only the PIDs the task names"
    if (
        program in _POWER
        or (program == "init" and args[:1] in (("0",), ("6",)))
        or (program == "systemctl" and args[:1] in (("poweroff",), ("reboot",), ("halt",)))
    ):
        return f"`{name}` would stop the machine: never run it here"
    return None


def _endless(command: SimpleCommand, timeout_s: float) -> str | None:
    if command.bounded:
        return None
    program, args = command.program, command.args
    if program == "yes" and not command.piped_out:
        return "`yes` prints forever: add `| head -n 20`"
    if program == "tail" and (
        "f" in _short_flags(args).lower() or any(a.startswith("--follow") for a in args)
    ):
        return f"`tail -f` follows the file forever: drop `-f` (use `tail -n 20`), or {_BOUND_HINT}"
    if program == "sleep" and _seconds(args) > timeout_s:
        return (
            f"`sleep {' '.join(args)}` outlasts the {timeout_s:g} s command time limit: sleep less, "
            "or run it in the background with `&`"
        )
    if program == "watch":
        return "`watch` repeats forever: run the command once"
    if program in ("top", "htop", "atop") and not (
        program == "top" and "b" in _short_flags(args) and "n" in _short_flags(args)
    ):
        return f"`{program}` runs until you quit it: use `top -b -n 1` (or `ps aux`)"
    if program == "ping" and "c" not in _short_flags(args) and "-c" not in args:
        return "`ping` runs forever (and there is no network): add `-c 3`"
    if program in ("nc", "ncat", "netcat") and "l" in _short_flags(args):
        return f"`{program} -l` waits for connections forever: run it in the background with `&`"
    if program.startswith("python") and args[:2] == ("-m", "http.server"):
        return "`python3 -m http.server` serves forever: run it in the background with `&`"
    return None


def _interactive(command: SimpleCommand, text: str) -> str | None:
    program, args = command.program, command.args
    if program in _EDITORS:
        return f"`{program}` is an interactive editor and would wait for keys that never come: {_EDIT_HINT}"
    if program in _PAGERS:
        return f"`{program}` is an interactive pager: use `cat`, `head -n 40` or `sed -n '1,40p'` instead"
    if (
        program in _REMOTE
        and not command.piped_in
        and not command.redirected_in
        and "-e" not in args
        and "-c" not in args
    ):
        return f"`{program}` opens an interactive session: there is nothing to type into it here"
    if program == "read" and not command.piped_in and not command.redirected_in and "<" not in text:
        return "`read` waits for input that never comes: feed it with a redirect (`read x < file`) or a pipe"
    if program in _SHELLS and not args and not command.piped_in and not command.redirected_in:
        example = "python3 -c '...'" if program.startswith("python") else f"{program} -c '...'"
        return f"`{program}` with no script waits for input: pass the code (`{example}`) or a file"
    if program == "su" and "-c" not in args and "--command" not in " ".join(args):
        return "`su` without `-c` would open an interactive shell: run `su - USER -c 'command'`"
    if program == "passwd" and "--stdin" not in args and not command.piped_in:
        return "`passwd` asks for the password interactively: use `echo 'user:password' | chpasswd`"
    if program == "adduser" and "--disabled-password" not in args and "--gecos" not in args:
        return "`adduser` asks questions interactively: use `useradd -m USER`"
    return None


# ---------------------------------------------------------------------------- the sandbox call
_CACHE_SIZE = 4096
_syntax_cache: OrderedDict[str, str] = OrderedDict()  # command text -> "" (ok) or bash's error message
_known_programs: set[str] = (
    set()
)  # programs of the host's read-only /usr (same in every sandbox; not /usr/local)
_lock = threading.Lock()
_FD_LINE = re.compile(r"/dev/fd/\d+: line (\d+): ")
_SYSTEM_PREFIXES = ("/usr/", "/bin/", "/sbin/", "/lib/")


@dataclass
class SandboxFacts:
    """What one sandbox call found: bash's syntax verdict and the programs that are missing."""

    syntax_error: str = ""
    missing: list[str] = field(default_factory=list)
    checked: bool = True  # False: the sandbox gave no answer (nothing could be checked)


def sandbox_facts(sandbox: ShellSandbox, command: str, programs: Sequence[str]) -> SandboxFacts:
    """Bash's syntax verdict on ``command`` and which of ``programs`` are missing, from one call into
    the sandbox (none when both are cached). ``command`` is only parsed (``set -n``), never run."""
    with _lock:
        cached = _syntax_cache.get(command)
        if cached is not None:
            _syntax_cache.move_to_end(command)
        unknown = [p for p in programs if p not in _known_programs]
    if cached is not None and not unknown:
        return SandboxFacts(cached, [])
    # Line 1 looks the programs up; after `set -n` bash only parses the rest (the command).
    script = (
        f'PATH="{USER_BIN_PATH}:$PATH"; for p in "$@"; do builtin printf "P\\t%s\\t" "$p"; '
        'builtin command -v -- "$p" || builtin echo; done; builtin printf "\\n%s\\n" "$m"; set -n\n'
    )
    if cached is None:
        script += command
    marker = "__CMAT_PARSE__"
    result = sandbox.run_script(f"m={marker}; {script}", args=list(unknown))
    head, done, tail = result.output.partition(f"\n{marker}\n")
    if not done or result.exit_code is None or result.timed_out:
        # The lookups did not even finish (a broken or rebuilt sandbox): no verdict, nothing cached.
        return SandboxFacts("", [], checked=False)
    missing: list[str] = []
    with _lock:
        for line in head.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0] == "P":
                found = parts[2].strip() if len(parts) > 2 else ""
                if not found:
                    missing.append(parts[1])
                elif (
                    found.startswith(_SYSTEM_PREFIXES) and not found.startswith("/usr/local/")
                ) or found == parts[1]:
                    _known_programs.add(parts[1])  # host programs and builtins are the same everywhere
        if cached is None:
            error = ""
            if result.exit_code != 0 or result.timed_out:
                error = (
                    _FD_LINE.sub(lambda m: f"line {int(m.group(1)) - 1}: ", tail.strip()) or "syntax error"
                )
            _syntax_cache[command] = error
            while len(_syntax_cache) > _CACHE_SIZE:
                _syntax_cache.popitem(last=False)
            cached = error
    return SandboxFacts(cached, missing)


# ---------------------------------------------------------------------------- intent
_QUESTION = re.compile(
    r"\b(how many|how much|how long|what|which|who|whose|where|when|tell me|find out|"
    r"count of|is there|are there|answer me|return '|whether)\b",
    re.IGNORECASE,
)
_PATHISH = re.compile(r"\S*/\S*|\S+\.[A-Za-z0-9]+\b|'[^']*'|\"[^\"]*\"")
_CHANGE = re.compile(
    r"\b(create|creates|implement|make|set up|setup|add|change|modify|delete|remove|rename|move|"
    r"copy|write|install|configure|append|replace|grant|revoke|kill|stop|start|schedule|"
    r"compress|extract|archive|chmod|chown|fix|update|edit|insert|ensure|generate|save|store)\b",
    re.IGNORECASE,
)


def asks_question(instruction: str) -> bool:
    """Whether the instruction asks a question to answer (not a change to make): it has a question
    phrase ("how many", "what", "which", "tell me", ...) and no change verb, or ends with "?"."""
    words = _PATHISH.sub(" ", instruction)  # "/root/archive" names a place, not an action
    if _CHANGE.search(words):
        return False
    return bool(_QUESTION.search(instruction)) or instruction.rstrip().endswith("?")


# ---------------------------------------------------------------------------- the checker
class OSRuleChecker(Checker):
    """Gold-free rule checker for cmat/OS-v0 (see the module docstring for the checks).

    ``review`` needs ``env``, the live :class:`~cmat_gym.domains.os.env.OSEnv` (its sandbox parses
    the command and looks programs up); it reads only ``task.instruction``, the dialogue and the
    sandbox, never the payload.

    Scores (heuristic, in [0, 1]): 0.0 for malformed actions and syntax errors, 0.1 for a broken
    rule (destructive, endless, interactive, missing program, ``finish`` on a question); 0.8 for an
    approved command; a final answer 0.9, or 0.3 when no command has run yet.
    """

    name = "rule"

    def review(
        self,
        task: Task,
        history: Sequence[Turn],
        action: str,
        env: TextEnv | None = None,
        *,
        parsed: ParsedAction | ActionError | None = None,
    ) -> Verdict:
        sandbox = getattr(env, "sandbox", None)
        if sandbox is None or not hasattr(sandbox, "run_script"):
            raise TypeError("OSRuleChecker needs the live OS environment: review(..., env=<OSEnv>)")
        parsed = parsed_or_parse(action, env, parsed)
        if isinstance(parsed, ActionError):
            return Verdict(False, f"malformed action: {parsed.message}", 0.0)
        if parsed.kind == ANSWER:
            return self._review_answer(task, history, parsed)
        command = str(parsed.value)
        timeout_s = float(getattr(env, "command_timeout_s", 5.0))
        problem = static_problem(command, timeout_s)
        if problem:
            return Verdict(False, problem, 0.1)
        defined = defined_names(
            [command, *(t.get("content", "") for t in history if t.get("role") == "assistant")]
        )
        facts = sandbox_facts(sandbox, command, program_names(command, defined))
        if not facts.checked:
            return Verdict(True, "the sandbox could not parse the command to check it", 0.5)
        if facts.syntax_error:
            return Verdict(False, f"bash cannot parse the command: {facts.syntax_error}", 0.0)
        if facts.missing:
            name = facts.missing[0]
            hint = _SUGGEST.get(name, "use a standard tool (coreutils, grep, sed, awk, find, python3)")
            return Verdict(False, f"`{name}` is not installed; {hint}", 0.1)
        return Verdict(True, "", 0.8)

    @staticmethod
    def _review_answer(task: Task, history: Sequence[Turn], parsed: ParsedAction) -> Verdict:
        ran = any(t.get("role") == "env" for t in history)
        if parsed.tool == "finish":
            if asks_question(task.instruction):
                return Verdict(
                    False,
                    "the task asks a question: answer(...) with what you found, `finish` gives no answer",
                    0.1,
                )
            return Verdict(True, "", 0.9) if ran else Verdict(True, "finishing before any command ran", 0.3)
        return Verdict(True, "", 0.9) if ran else Verdict(True, "answering before any command ran", 0.3)


# ---------------------------------------------------------------------------- hindsight
class OSHooks(DomainHooks):
    """The OS domain's rule checker and hindsight: an executed command was fine when it exited with
    status 0 and did not time out. A shell has no dry run (nothing undoes a command's effects), so
    :meth:`dry_run_ok` and :meth:`dry_run_text` return None (a rejected command is not judged)."""

    def rule_checker(self) -> Checker:
        return OSRuleChecker()

    def executed_ok(self, env: TextEnv, action: ParsedAction, observation: str, snapshot: Any) -> bool | None:
        result = getattr(env, "last_result", None)
        if result is not None:
            return result.exit_code == 0 and not result.timed_out
        return not (
            observation.lstrip().startswith("Error")
            or "[exit status" in observation
            or "timed out" in observation
        )

    def dry_run_ok(self, env: TextEnv, action: ParsedAction) -> bool | None:
        return None

    def dry_run_text(self, env: TextEnv, action: ParsedAction) -> str | None:
        return None
