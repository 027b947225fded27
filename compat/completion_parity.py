"""Shell completion parity: our `tm` against the official CLI's Click completion.

The official answers are computed in this process from the installed `tensormesh_cli`
(Click's own completion classes, exactly what `_TM_COMPLETE=<shell>_complete tm` runs), so
that every command path of the official tree can be asked in seconds; ours come from our
binary, the way a shell asks it.
"""

import os
import subprocess

import click
from click.shell_completion import get_completion_class
from tensormesh_cli.cli import cli

SHELLS = ("bash", "zsh", "fish", "powershell")


def command_paths(command=cli, path=("tm",)):
    """Every visible command of the official tree with its path."""
    yield list(path), command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1])
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if not sub.hidden:
                yield from command_paths(sub, (*path, name))


def requests():
    """(COMP_WORDS, COMP_CWORD, the incomplete word) for each command: its subcommands or
    first argument, its options (also after each one was given), and each option's values
    (also as `--opt=`)."""
    out = []
    for path, command in command_paths():
        words, n = " ".join(path), len(path)
        out += [(words + " ", n, ""), (words + " -", n, "-"), (words + " --", n, "--")]
        # The declared parameters: `get_params` on a bare context would cache a help
        # option without the official `-h` on the command.
        for p in command.params:
            if not isinstance(p, click.Option) or p.hidden:
                continue
            name = p.opts[0]
            if p.is_flag:
                out.append((f"{words} {name} --", n + 1, "--"))
            else:
                out += [(f"{words} {name} ", n + 1, ""), (f"{words} {name}=", n, f"{name}="),
                        (f"{words} {name} x -", n + 2, "-")]
    # Partial words, quoting and the end-of-options marker.
    out += [("tm au", 1, "au"), ("tm --output=j", 1, "--output=j"), ("tm --output JS", 2, "JS"),
            ("tm billing 'pri", 2, "pri"), ("tm infer chat -- -", 4, "-"), ("tm nonsense ", 2, "")]
    return out


def official(shell, words, cword):
    env = {"COMP_WORDS": words, "COMP_CWORD": str(cword)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        comp = get_completion_class(shell)(cli, {}, "tm", "_TM_COMPLETE")
        return comp.complete() + "\n"  # click.echo adds the newline
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def ours(binary, shell, words, cword):
    env = dict(os.environ, _TM_COMPLETE=f"{shell}_complete", COMP_WORDS=words, COMP_CWORD=str(cword))
    out = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, (shell, words, out.stderr)
    return out.stdout


def values(shell, text):
    """A completion answer without its help texts (ours are our own words)."""
    lines = text.split("\n")
    if shell in ("zsh", "powershell"):
        return [line for i, line in enumerate(lines) if i % 3 != 2]
    return [line.split("\t")[0] for line in lines]


def check_protocol(binary):
    """Bash answers must be identical; zsh, fish and PowerShell answers must offer the same
    values of the same kinds in the same order (their help texts are ours)."""
    asked, differ = 0, []
    for shell in SHELLS:
        for words, cword, incomplete in requests():
            arg = incomplete if shell == "fish" else cword
            a, b = official(shell, words, arg), ours(binary, shell, words, arg)
            asked += 1
            if (a != b) if shell == "bash" else (values(shell, a) != values(shell, b)):
                differ.append(f"{shell} {words!r} {arg!r}:\n  official {a!r}\n  ours     {b!r}")
    assert not differ, f"{len(differ)} of {asked} completion answers differ:\n" + "\n".join(differ[:10])
    return asked


def check_sources(binary):
    """`_TM_COMPLETE=<shell>_source` prints Click's script byte for byte, and an unknown
    shell or instruction exits 1 with nothing, as Click does."""
    for shell in SHELLS:
        comp = get_completion_class(shell)(cli, {}, "tm", "_TM_COMPLETE")
        out = subprocess.run([binary], env=dict(os.environ, _TM_COMPLETE=f"{shell}_source"),
                             capture_output=True, text=True, timeout=30)
        assert (out.returncode, out.stdout) == (0, comp.source()), (shell, out.stdout[:200])
    for bad in ("tcsh_source", "bash_nothing"):
        out = subprocess.run([binary], env=dict(os.environ, _TM_COMPLETE=bad), capture_output=True, text=True)
        assert (out.returncode, out.stdout) == (1, ""), (bad, out.returncode, out.stdout)


def check_in_bash(binary, hook):
    """The hook, evaluated in a real bash with our binary as `tm` on the PATH, completes
    `tm au<TAB>` to `auth` and `tm --output <TAB>` to the formats."""
    bin_dir = os.path.join(os.path.dirname(os.path.abspath(binary)), "completion-path")
    os.makedirs(bin_dir, exist_ok=True)
    link = os.path.join(bin_dir, "tm")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(binary), link)
    script = f"""{hook}
COMP_WORDS=(tm au); COMP_CWORD=1; _tm_completion tm; echo "${{COMPREPLY[*]}}"
COMPREPLY=(); COMP_WORDS=(tm --output ''); COMP_CWORD=2; _tm_completion tm; echo "${{COMPREPLY[*]}}"
"""
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["auth", "text json yaml raw table"], out.stdout
