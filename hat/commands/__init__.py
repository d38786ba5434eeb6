"""One module per `hat` subcommand; each exposes `register(subparsers)` (`settings` is the
shared `--config` helper, not a command)."""
