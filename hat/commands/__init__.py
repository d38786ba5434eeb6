"""One module per `hat` subcommand; each exposes `register(subparsers)`."""
