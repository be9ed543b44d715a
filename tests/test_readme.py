"""The README's examples are real: its configuration loads, its commands exist."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

from llm_inproc import load_config
from llm_inproc.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL)


def test_configuration_example_loads() -> None:
    (yaml_text,) = _blocks("yaml")
    config = load_config(StringIO(yaml_text))
    assert config.options.context_length == 8192
    assert config.options.max_pending == 64
    (mistral,) = config.known_llms
    assert mistral.prompt_encoding is not None
    assert mistral.prompt_encoding.user_token_start == "[INST]\u2581"


def test_the_two_commands_and_every_cli_example_parse() -> None:
    install_and_run, install_and_test = _blocks("sh")[:2]
    assert install_and_run.strip().startswith("pip install '.[demo]' && llm-inproc prompt")
    assert install_and_test.strip() == "pip install -e '.[dev]' && python -m pytest"
    assert (
        (Path(__file__).resolve().parents[1] / ".ci" / "run")
        .read_text()
        .rstrip()
        .endswith(install_and_test.strip())
    ), ".ci/run must run exactly the README's test command"
    parser = build_parser()
    for block in _blocks("sh"):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("llm-inproc "):
                argv = re.findall(r'"[^"]*"|\S+', line)[1:]
                parser.parse_args([a.strip('"') for a in argv])
