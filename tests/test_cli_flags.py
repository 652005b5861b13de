"""The command line: flags generated from the dataclasses (an option is written once), commands registered by
their own modules (the extension point), and no import circle between the client's and the server's CLI."""
import dataclasses
import subprocess
import sys
import types

import pytest

from bodydouble import cli, cliflags
from bodydouble.jobspec import ExtendRequest, FillRequest, TrainOptions, TrainRequest


def test_every_train_option_is_a_flag_and_reaches_the_request():
    """Set every field to a non-default value on the command line: the request carries each one."""
    argv = ["train", "/refs/a", "/refs/b", "--character", "Hero", "--model-kind", "video", "--name", "hero",
            "--trigger", "<h>", "--resolution", "256", "--rank", "8", "--steps", "7", "--learning-rate", "0.5",
            "--batch", "2", "--seed", "3", "--checkpoint-every", "4", "--holdout-per-view", "0",
            "--preview-steps", "2", "--preview-count", "1", "--no-mixed-precision", "--no-gradient-checkpointing",
            "--train-text-encoder", "--clip-frames", "5", "--clip-conditioning", "2", "--clip-fill", "0.25",
            "--rights-holder", "Studio",
            "--licence", "ok", "--colorspace", "sRGB", "--min-frames", "2", "--min-per-view", "0",
            "--require-view", "front", "--require-view", "back", "--force", "--report-only",
            "--contact-sheet", "sheet.png"]
    request = cli.train_request(cli.build_parser().parse_args(argv))
    defaults = TrainRequest()
    changed = {f.name for f in dataclasses.fields(TrainRequest) if getattr(request, f.name) != getattr(defaults, f.name)}
    assert changed == {f.name for f in dataclasses.fields(TrainRequest)}     # every field has a flag that works
    assert request.frames == ["/refs/a", "/refs/b"] and request.required_views == ["front", "back"]
    assert request.contact_sheet.endswith("/sheet.png") and request.contact_sheet.startswith("/")
    assert (request.mixed_precision, request.gradient_checkpointing, request.learning_rate) == (False, False, 0.5)


def test_a_new_option_field_gets_its_flag_without_touching_the_cli():
    @dataclasses.dataclass
    class Options(TrainOptions):
        denoise_floor: float = 0.25
        tags: list[str] = dataclasses.field(default_factory=list)
        nested: dict = dataclasses.field(default_factory=dict)     # not a flag: a settings table

    import argparse

    parser = argparse.ArgumentParser()
    added = cliflags.add_fields(parser, Options)
    assert "denoise_floor" in added and "tags" in added and "nested" not in added
    args = parser.parse_args(["--character", "X", "--denoise-floor", "0.5", "--tags", "a", "--tags", "b"])
    options = Options(**cliflags.values(Options, args))
    assert (options.denoise_floor, options.tags, options.character, options.steps) == (0.5, ["a", "b"], "X", 500)


def test_generation_flags_come_from_the_request_fields():
    parser = cli.build_parser()
    fill = parser.parse_args(["fill", "--plate", "p.####.exr", "--frames", "1-2", "--feather", "9", "--negative", "n"])
    extend = parser.parse_args(["extend", "--plate", "p.####.exr", "--frames", "1-2", "--count", "3",
                                "--no-colour-match"])
    assert (fill.feather, fill.negative_prompt, fill.guidance) == (9, "n", FillRequest.guidance)
    assert (extend.count, extend.colour_match, extend.guidance) == (3, False, ExtendRequest.guidance)
    with pytest.raises(SystemExit):
        parser.parse_args(["extend", "--plate", "p.####.exr", "--frames", "1-2"])     # --count is required


def test_serve_flags_override_only_what_is_given(tmp_path):
    from bodydouble_server.config import ServerConfig

    config_file = tmp_path / "server.toml"
    config_file.write_text('port = 6000\nvideo_model = "none"\nroots = ["/shows"]\n')
    args = cli.build_parser().parse_args(["serve", "--config", str(config_file), "--root", "/a", "--root", "/b",
                                          "--curve-clients", "/certs", "--dtype", "float16"])
    config = ServerConfig.load(args.config, **cliflags.values(ServerConfig, args))
    assert (config.port, config.video_model) == (6000, "none")          # from the file: the flags were not given
    assert config.roots == ["/a", "/b"] and config.curve_authorized_clients == "/certs" and config.dtype == "float16"
    from bodydouble_server.cli import SERVE_FLAGS

    flags = set(cliflags.field_flags(ServerConfig)) - {name for name, flag in SERVE_FLAGS.items() if flag.skip}
    assert "limits" not in flags and flags <= set(vars(args))     # every scalar setting not skipped is a serve flag


def test_a_command_module_registers_its_commands(monkeypatch):
    module = types.ModuleType("bodydouble_test_commands")

    def register(commands):
        p = commands.client("testaudit", "show a test log", lambda args: 7)
        p.add_argument("--since")
        commands.parser("train").add_argument("--extra-thing")

    module.register = register
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, module.__name__])
    args = cli.build_parser().parse_args(["testaudit", "--since", "today", "--server", "tcp://x:1"])
    assert (args.func(args), args.since, args.server, args.timeout) == (7, "today", "tcp://x:1", 10.0)
    assert cli.build_parser().parse_args(["train", "f", "--character", "c", "--extra-thing", "1"]).extra_thing == "1"


def test_a_missing_command_module_hides_its_commands_and_says_why(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["bodydouble_not_installed.cli"])
    parser = cli.build_parser()
    assert "bodydouble_not_installed" in parser.epilog
    args = parser.parse_args(["train", "/refs", "--character", "Hero"])
    assert args.func(args) == 2 and "needs the server install" in capsys.readouterr().err


def test_the_server_cli_does_not_import_the_client_cli_nor_torch():
    code = ("import sys, bodydouble_server.cli;"
            "bad = [m for m in ('bodydouble.cli', 'torch', 'diffusers', 'OpenImageIO') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_command_module_adds_a_subcommand_under_an_existing_command(monkeypatch):
    module = types.ModuleType("bodydouble_test_group")

    def register(commands):
        commands.group("adapters").client("testretire", "retire a test adapter", lambda args: 5).add_argument("name")

    module.register = register
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, module.__name__])
    parser = cli.build_parser()
    retire = parser.parse_args(["adapters", "testretire", "hero", "--server", "tcp://x:1"])
    assert (retire.func(retire), retire.name, retire.server) == (5, "hero", "tcp://x:1")
    listing = parser.parse_args(["adapters", "--json"])
    assert listing.func is cli.cmd_adapters and listing.json
