"""`blinds --help` and each command's help: every command is listed with its
one-line help, and each has a description and an example for its user."""

import re

import pytest

from blinds_host import cli


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv) + ["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_top_level_lists_every_command(capsys):
    out = _help(capsys)
    assert "privacy hub" in out and "blinds COMMAND --help" in out
    for name, (_mod, one_line) in cli.COMMANDS.items():
        assert name in out and " ".join(one_line.split()[:4]) in " ".join(out.split()), name


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_says_what_it_does(capsys, name):
    out = _help(capsys, name)
    description, epilog = cli.HELP[name]
    assert " ".join(description.split()[:6]) in " ".join(out.split())
    assert epilog.splitlines()[0] in ("example:", "examples:")
    assert "blinds %s" % name in epilog
    assert "usage: blinds %s" % name in out


def _examples():
    """Every `blinds ...` line of the help's examples, as argv."""
    for text in [cli.EPILOG] + [epilog for _, epilog in cli.HELP.values()]:
        for line in text.splitlines():
            if not line.startswith("  "):
                continue  # a heading or a sentence, not an example
            command = re.split(r"\s{2,}|\(|>", line.strip())[0]  # without comment or redirection
            words = command.split()
            if "blinds" in words:
                yield words[words.index("blinds") + 1:]


@pytest.mark.parametrize("argv", list(_examples()), ids=" ".join)
def test_examples_parse(argv):
    """The examples use options the commands have."""
    args = cli.build_parser().parse_args(argv)
    assert args.command == argv[0]
